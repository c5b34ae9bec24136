//! Test helpers: a small JSON reader for the golden manifest (std only) and file loading.
#![allow(dead_code)]
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(BTreeMap<String, Json>),
}

impl Json {
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(m) => m.get(key),
            _ => None,
        }
    }
    pub fn str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn num(&self) -> Option<f64> {
        match self {
            Json::Num(v) => Some(*v),
            _ => None,
        }
    }
    pub fn arr(&self) -> &[Json] {
        match self {
            Json::Arr(v) => v,
            _ => &[],
        }
    }
    /// `self[a][b]...` as a string, or panic naming the path.
    pub fn path_str(&self, path: &[&str]) -> &str {
        let mut v = self;
        for key in path {
            v = v.get(key).unwrap_or_else(|| panic!("manifest: no {path:?}"));
        }
        v.str()
            .unwrap_or_else(|| panic!("manifest: {path:?} is not a string"))
    }
}

pub fn parse(text: &str) -> Json {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
    };
    let v = p.value();
    p.ws();
    assert_eq!(p.i, p.s.len(), "trailing data in JSON");
    v
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn eat(&mut self, c: u8) {
        self.ws();
        assert_eq!(
            self.s.get(self.i),
            Some(&c),
            "JSON: expected {:?} at byte {}",
            c as char,
            self.i
        );
        self.i += 1;
    }
    fn peek(&mut self) -> u8 {
        self.ws();
        *self.s.get(self.i).expect("JSON: unexpected end")
    }
    fn value(&mut self) -> Json {
        match self.peek() {
            b'{' => {
                self.eat(b'{');
                let mut m = BTreeMap::new();
                if self.peek() == b'}' {
                    self.eat(b'}');
                    return Json::Obj(m);
                }
                loop {
                    let k = self.string();
                    self.eat(b':');
                    m.insert(k, self.value());
                    if self.peek() == b',' {
                        self.eat(b',');
                    } else {
                        self.eat(b'}');
                        return Json::Obj(m);
                    }
                }
            }
            b'[' => {
                self.eat(b'[');
                let mut v = Vec::new();
                if self.peek() == b']' {
                    self.eat(b']');
                    return Json::Arr(v);
                }
                loop {
                    v.push(self.value());
                    if self.peek() == b',' {
                        self.eat(b',');
                    } else {
                        self.eat(b']');
                        return Json::Arr(v);
                    }
                }
            }
            b'"' => Json::Str(self.string()),
            b't' => self.word("true", Json::Bool(true)),
            b'f' => self.word("false", Json::Bool(false)),
            b'n' => self.word("null", Json::Null),
            _ => {
                let start = self.i;
                while self.i < self.s.len() && b"+-.eE0123456789".contains(&self.s[self.i]) {
                    self.i += 1;
                }
                let t = std::str::from_utf8(&self.s[start..self.i]).unwrap();
                Json::Num(t.parse().unwrap_or_else(|_| panic!("JSON: bad number {t:?}")))
            }
        }
    }
    fn word(&mut self, w: &str, v: Json) -> Json {
        self.ws();
        assert!(self.s[self.i..].starts_with(w.as_bytes()), "JSON: expected {w}");
        self.i += w.len();
        v
    }
    fn string(&mut self) -> String {
        self.eat(b'"');
        let mut out = String::new();
        loop {
            let c = self.s[self.i];
            self.i += 1;
            match c {
                b'"' => return out,
                b'\\' => {
                    let e = self.s[self.i];
                    self.i += 1;
                    match e {
                        b'n' => out.push('\n'),
                        b't' => out.push('\t'),
                        b'r' => out.push('\r'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'u' => {
                            let hex = std::str::from_utf8(&self.s[self.i..self.i + 4]).unwrap();
                            self.i += 4;
                            out.push(char::from_u32(u32::from_str_radix(hex, 16).unwrap()).unwrap_or('?'));
                        }
                        other => out.push(other as char),
                    }
                }
                _ => {
                    // Copy a run of plain bytes (UTF-8 passes through untouched).
                    let start = self.i - 1;
                    while self.s[self.i] != b'"' && self.s[self.i] != b'\\' {
                        self.i += 1;
                    }
                    out.push_str(std::str::from_utf8(&self.s[start..self.i]).unwrap());
                }
            }
        }
    }
}

/// $BNB_GOLDEN_DIR, else the repository's tests/data/golden.
pub fn golden_dir() -> PathBuf {
    match std::env::var_os("BNB_GOLDEN_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../tests/data/golden"),
    }
}

pub fn manifest() -> Json {
    let path = golden_dir().join("manifest.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "no golden vectors: reading {}: {e} (BNB_GOLDEN_DIR overrides the directory)",
            path.display()
        )
    });
    parse(&text)
}

/// The first case of `op` on the cuda reference whose params and input dtype match.
pub fn find_case<'a>(m: &'a Json, op: &str, params: &[(&str, &str)], dtype: &str) -> &'a Json {
    m.get("cases")
        .expect("manifest has cases")
        .arr()
        .iter()
        .find(|c| {
            c.path_str(&["op"]) == op
                && c.path_str(&["backend"]) == "cuda"
                && c.path_str(&["inputs", "A", "dtype"]) == dtype
                && params.iter().all(|(k, want)| {
                    let p = c.get("params").and_then(|p| p.get(k));
                    match p {
                        Some(Json::Str(s)) => s == want,
                        Some(Json::Num(v)) => v.to_string() == *want,
                        _ => false,
                    }
                })
        })
        .unwrap_or_else(|| panic!("no cuda {op} case with {params:?} and {dtype}"))
}

/// An array's raw contents. Each file is stored gzip-compressed beside the name the manifest gives
/// (tests/data/golden/README.md); the tests use std only, so the system's `gzip -dc` inflates it,
/// checking the CRC-32 and length at the end of the file. The size must match shape and dtype.
pub fn read_bytes(case: &Json, side: &str, name: &str) -> Vec<u8> {
    let file = case.path_str(&[side, name, "file"]);
    let path = golden_dir().join(format!("{file}.gz"));
    let out = std::process::Command::new("gzip")
        .arg("-dc")
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("running gzip -dc {}: {e}", path.display()));
    if !out.status.success() {
        panic!(
            "gzip -dc {}: {} {}",
            path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let elem = match case.path_str(&[side, name, "dtype"]) {
        "float32" | "int32" => 4,
        "float16" | "bfloat16" => 2,
        "uint8" | "int8" => 1,
        "int64" => 8,
        other => panic!("{}: unknown dtype {other}", path.display()),
    };
    let want = elem * shape(case, side, name).iter().product::<usize>();
    assert_eq!(
        out.stdout.len(),
        want,
        "{}: size does not match its shape and dtype",
        path.display()
    );
    out.stdout
}

pub fn read_f32(case: &Json, side: &str, name: &str) -> Vec<f32> {
    assert_eq!(case.path_str(&[side, name, "dtype"]), "float32");
    read_bytes(case, side, name)
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

pub fn read_u16(case: &Json, side: &str, name: &str) -> Vec<u16> {
    read_bytes(case, side, name)
        .chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// Index and values of the first difference of two bit patterns, for a readable failure.
pub fn first_mismatch<T: PartialEq + Copy + std::fmt::Debug>(got: &[T], want: &[T]) -> Option<String> {
    if got.len() != want.len() {
        return Some(format!("length {} != {}", got.len(), want.len()));
    }
    let bad: Vec<usize> = (0..got.len()).filter(|&i| got[i] != want[i]).collect();
    bad.first().map(|&i| {
        format!(
            "{} of {} differ; first at {i}: got {:?}, want {:?}",
            bad.len(),
            got.len(),
            got[i],
            want[i]
        )
    })
}

/// The first cuda case of `op` for which `pred` holds.
pub fn find_case_by<'a>(m: &'a Json, op: &str, pred: impl Fn(&Json) -> bool) -> &'a Json {
    m.get("cases")
        .expect("manifest has cases")
        .arr()
        .iter()
        .find(|c| c.path_str(&["op"]) == op && c.path_str(&["backend"]) == "cuda" && pred(c))
        .unwrap_or_else(|| panic!("no cuda {op} case"))
}

pub fn read_i32(case: &Json, side: &str, name: &str) -> Vec<i32> {
    read_bytes(case, side, name)
        .chunks_exact(4)
        .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

pub fn read_i8(case: &Json, side: &str, name: &str) -> Vec<i8> {
    read_bytes(case, side, name)
        .into_iter()
        .map(|b| b as i8)
        .collect()
}

/// Shape of an array as usize dimensions.
pub fn shape(case: &Json, side: &str, name: &str) -> Vec<usize> {
    let mut v = case;
    for key in [side, name, "shape"] {
        v = v
            .get(key)
            .unwrap_or_else(|| panic!("manifest: no {side}.{name}.shape"));
    }
    v.arr()
        .iter()
        .map(|d| d.num().expect("numeric dimension") as usize)
        .collect()
}
