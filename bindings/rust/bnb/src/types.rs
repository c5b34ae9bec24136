use bnb_sys as sys;

/// Element types of the C API (`bnb_dtype_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
    U8,
    I8,
    I32,
}

impl DType {
    pub fn raw(self) -> i32 {
        match self {
            DType::F32 => sys::BNB_F32,
            DType::F16 => sys::BNB_F16,
            DType::BF16 => sys::BNB_BF16,
            DType::U8 => sys::BNB_U8,
            DType::I8 => sys::BNB_I8,
            DType::I32 => sys::BNB_I32,
        }
    }
}

/// The two 4-bit code books.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Quant4 {
    Fp4,
    Nf4,
}

impl Quant4 {
    pub fn raw(self) -> i32 {
        match self {
            Quant4::Fp4 => sys::BNB_FP4,
            Quant4::Nf4 => sys::BNB_NF4,
        }
    }
}

/// The built-in code tables (`bnb_get_code_table`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CodeTable {
    DynamicSigned,
    DynamicUnsigned,
    Nf4,
    Fp4,
}

impl CodeTable {
    pub fn raw(self) -> i32 {
        match self {
            CodeTable::DynamicSigned => sys::BNB_CODE_DYNAMIC_SIGNED,
            CodeTable::DynamicUnsigned => sys::BNB_CODE_DYNAMIC_UNSIGNED,
            CodeTable::Nf4 => sys::BNB_CODE_NF4,
            CodeTable::Fp4 => sys::BNB_CODE_FP4,
        }
    }
}

/// Backends (`bnb_backend_kind_t`). `Auto` follows `$BNB_BACKEND`, else the best available.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    Auto,
    Cpu,
    Cuda,
    Hip,
    /// A kind this binding does not know (from a newer library).
    Other(i32),
}

impl Backend {
    pub fn from_raw(raw: i32) -> Backend {
        match raw {
            sys::BNB_BACKEND_AUTO => Backend::Auto,
            sys::BNB_BACKEND_CPU => Backend::Cpu,
            sys::BNB_BACKEND_CUDA => Backend::Cuda,
            sys::BNB_BACKEND_HIP => Backend::Hip,
            other => Backend::Other(other),
        }
    }

    pub fn raw(self) -> i32 {
        match self {
            Backend::Auto => sys::BNB_BACKEND_AUTO,
            Backend::Cpu => sys::BNB_BACKEND_CPU,
            Backend::Cuda => sys::BNB_BACKEND_CUDA,
            Backend::Hip => sys::BNB_BACKEND_HIP,
            Backend::Other(raw) => raw,
        }
    }
}

/// An IEEE binary16 value, held as its bit pattern.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct F16(pub u16);

/// A bfloat16 value (the upper half of a binary32), held as its bit pattern.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BF16(pub u16);

impl F16 {
    pub fn to_f32(self) -> f32 {
        let sign = ((self.0 as u32) & 0x8000) << 16;
        let exp = ((self.0 >> 10) & 0x1f) as u32;
        let man = (self.0 & 0x3ff) as u32;
        let bits = match (exp, man) {
            (0, 0) => sign,
            // Subnormal: man * 2^-24, exact in binary32.
            (0, _) => {
                let magnitude = man as f32 * f32::from_bits(0x3380_0000);
                return if sign != 0 { -magnitude } else { magnitude };
            }
            (0x1f, 0) => sign | 0x7f80_0000,
            (0x1f, _) => sign | 0x7fc0_0000 | (man << 13),
            _ => sign | ((exp + 112) << 23) | (man << 13),
        };
        f32::from_bits(bits)
    }

    /// Rounds to nearest, ties to even (what the library does when it stores fp16).
    pub fn from_f32(x: f32) -> F16 {
        let bits = x.to_bits();
        let sign = ((bits >> 16) & 0x8000) as u16;
        let abs = bits & 0x7fff_ffff;
        if abs > 0x7f80_0000 {
            return F16(sign | 0x7e00 | ((abs >> 13) & 0x3ff) as u16);
        }
        if abs >= 0x4780_0000 {
            // 65536 and above (or infinity): past the largest finite half after rounding.
            return F16(sign | 0x7c00);
        }
        if abs < 0x3880_0000 {
            // Below 2^-14: the result is subnormal (or zero); scale so the integer part is the
            // 10-bit field, which the float addition rounds to nearest even.
            let scaled = f32::from_bits(abs) * f32::from_bits(0x4b80_0000); // * 2^24
            let rounded = round_half_even(scaled);
            return F16(sign | rounded as u16);
        }
        let exp_adjusted = abs - (112 << 23);
        let rest = exp_adjusted & 0x1fff;
        let mut half = exp_adjusted >> 13;
        if rest > 0x1000 || (rest == 0x1000 && (half & 1) == 1) {
            half += 1;
        }
        F16(sign | half as u16)
    }
}

fn round_half_even(x: f32) -> u32 {
    let floor = x.floor();
    let frac = x - floor;
    let mut r = floor as u32;
    if frac > 0.5 || (frac == 0.5 && r % 2 == 1) {
        r += 1;
    }
    r
}

impl BF16 {
    pub fn to_f32(self) -> f32 {
        f32::from_bits((self.0 as u32) << 16)
    }

    /// Rounds to nearest, ties to even; NaN stays NaN.
    pub fn from_f32(x: f32) -> BF16 {
        let bits = x.to_bits();
        if x.is_nan() {
            return BF16(((bits >> 16) | 0x0040) as u16);
        }
        let round = 0x7fff + ((bits >> 16) & 1);
        BF16((bits.wrapping_add(round) >> 16) as u16)
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for super::F16 {}
    impl Sealed for super::BF16 {}
    impl Sealed for u8 {}
    impl Sealed for i8 {}
    impl Sealed for i32 {}
}

/// The element types of the C API's arrays: plain numbers for which every bit pattern, all
/// zeros included, is a valid value (so memory the library hands out can be viewed as a slice).
pub trait Element: Copy + Default + Send + Sync + sealed::Sealed {
    const DTYPE: DType;
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;
}
impl Element for F16 {
    const DTYPE: DType = DType::F16;
}
impl Element for BF16 {
    const DTYPE: DType = DType::BF16;
}
impl Element for u8 {
    const DTYPE: DType = DType::U8;
}
impl Element for i8 {
    const DTYPE: DType = DType::I8;
}
impl Element for i32 {
    const DTYPE: DType = DType::I32;
}

/// The floating-point element types the quantizers read and the dequantizers write.
pub trait Float: Copy + Default + sealed::Sealed {
    const DTYPE: DType;
}

impl Float for f32 {
    const DTYPE: DType = DType::F32;
}
impl Float for F16 {
    const DTYPE: DType = DType::F16;
}
impl Float for BF16 {
    const DTYPE: DType = DType::BF16;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_known_values() {
        for (bits, value) in [
            (0x3c00u16, 1.0f32),
            (0xc000, -2.0),
            (0x7bff, 65504.0),
            (0x0001, 5.960_464_5e-8),
            (0x0400, 6.103_515_6e-5),
            (0x3555, 0.333_251_95),
            (0x8000, -0.0),
        ] {
            assert_eq!(F16(bits).to_f32().to_bits(), value.to_bits(), "{bits:#06x}");
            assert_eq!(F16::from_f32(value).0, bits, "{value}");
        }
        assert!(F16(0x7e00).to_f32().is_nan());
        assert_eq!(F16::from_f32(f32::INFINITY).0, 0x7c00);
        assert_eq!(F16::from_f32(65520.0).0, 0x7c00); // halfway to the next binade rounds up
        assert_eq!(F16::from_f32(65519.0).0, 0x7bff);
    }

    #[test]
    fn f16_every_value_round_trips_and_midpoints_round_to_even() {
        for bits in 0u16..=0xffff {
            let h = F16(bits);
            let x = h.to_f32();
            if x.is_nan() {
                assert!(F16::from_f32(x).to_f32().is_nan());
                continue;
            }
            assert_eq!(F16::from_f32(x).0, bits, "{bits:#06x} -> {x}");
            // The midpoint to the next larger magnitude (exact in binary32) goes to the even one.
            let exp_all_ones = bits & 0x7c00 == 0x7c00;
            let next = bits.wrapping_add(1);
            if !exp_all_ones && next & 0x7fff != 0x7c00 && (next & 0x8000) == (bits & 0x8000) {
                let mid = (x as f64 + F16(next).to_f32() as f64) / 2.0;
                let even = if bits % 2 == 0 { bits } else { next };
                assert_eq!(F16::from_f32(mid as f32).0, even, "midpoint after {bits:#06x}");
            }
        }
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(BF16::from_f32(1.0).0, 0x3f80);
        assert_eq!(BF16(0x3f80).to_f32(), 1.0);
        assert_eq!(BF16::from_f32(f32::from_bits(0x3f80_8000)).0, 0x3f80); // tie, even stays
        assert_eq!(BF16::from_f32(f32::from_bits(0x3f81_8000)).0, 0x3f82); // tie, odd goes up
        assert_eq!(BF16::from_f32(f32::from_bits(0x3f80_8001)).0, 0x3f81);
        assert!(BF16::from_f32(f32::NAN).to_f32().is_nan());
    }
}
