//! Quantize a vector to NF4 and back, and print the backend and the largest error.
//! Run: BNB_LIB_DIR=<build>/lib cargo run --example quickstart
use bnb::{Context, Quant4, Scales};

fn main() -> Result<(), bnb::Error> {
    let ctx = Context::new()?;
    let x: Vec<f32> = (0..4096).map(|i| (i as f32 * 0.37).sin()).collect();
    let blocksize = 64;

    let mut packed = vec![0u8; bnb::packed_len(x.len())];
    let mut absmax = vec![0f32; bnb::num_blocks(x.len(), blocksize)];
    ctx.quantize_4bit(Quant4::Nf4, &x, blocksize, &mut packed, &mut absmax)?;

    let mut y = vec![0f32; x.len()];
    ctx.dequantize_4bit(Quant4::Nf4, &packed, &Scales::Plain(&absmax), blocksize, &mut y)?;

    let max_err = x.iter().zip(&y).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    println!(
        "bnb {} on {:?}: NF4 max error {max_err:.4}",
        bnb::version_string(),
        ctx.backend()
    );
    // A bad argument comes back as an error value carrying the library's message.
    let mut absmax48 = vec![0f32; bnb::num_blocks(x.len(), 48)];
    match ctx.quantize_4bit(Quant4::Nf4, &x, 48, &mut packed, &mut absmax48) {
        Err(e) => println!("blocksize 48 -> {e}"),
        Ok(()) => panic!("blocksize 48 was accepted"),
    }
    Ok(())
}
