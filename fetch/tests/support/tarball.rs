//! A tar writer with no opinions, so tests can build the archives a hostile or sloppy producer
//! would: absolute and `..` names, devices, links anywhere, lying headers.

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;

const BLOCK: usize = 512;

#[derive(Default)]
pub struct Tarball {
    buf: Vec<u8>,
}

impl Tarball {
    pub fn new() -> Self {
        Self::default()
    }

    /// source-controller's shape: a `./` root entry first.
    pub fn flux() -> Self {
        Self::new().dir("./", 0o750)
    }

    pub fn file(self, name: &str, mode: u32, data: &[u8]) -> Self {
        self.entry(name.as_bytes(), b'0', mode, data, b"")
    }

    pub fn dir(self, name: &str, mode: u32) -> Self {
        self.entry(name.as_bytes(), b'5', mode, b"", b"")
    }

    pub fn symlink(self, name: &str, target: &str) -> Self {
        self.entry(name.as_bytes(), b'2', 0o777, b"", target.as_bytes())
    }

    pub fn hardlink(self, name: &str, target: &str) -> Self {
        self.entry(name.as_bytes(), b'1', 0o644, b"", target.as_bytes())
    }

    /// A GNU long-name record announcing `size` bytes of name.
    pub fn long_name(self, name: &[u8]) -> Self {
        let mut data = name.to_vec();
        data.push(0);
        self.entry(b"././@LongLink", b'L', 0o644, &data, b"")
    }

    pub fn entry(mut self, name: &[u8], kind: u8, mode: u32, data: &[u8], link: &[u8]) -> Self {
        let mut h = [0u8; BLOCK];
        h[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
        octal(&mut h[100..108], u64::from(mode));
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        octal(&mut h[124..136], data.len() as u64);
        octal(&mut h[136..148], 1_700_000_000);
        h[156] = kind;
        h[157..157 + link.len().min(100)].copy_from_slice(&link[..link.len().min(100)]);
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        let field = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(field.as_bytes());
        self.buf.extend_from_slice(&h);
        self.buf.extend_from_slice(data);
        let pad = (BLOCK - data.len() % BLOCK) % BLOCK;
        self.buf.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    /// A GNU sparse entry (old GNU format) whose one byte of data sits at the end of a file of
    /// `real_size` bytes: all the rest is a hole the tar reader fills with zeros itself.
    pub fn sparse(mut self, name: &str, real_size: u64) -> Self {
        let mut h = [0u8; BLOCK];
        h[..name.len()].copy_from_slice(name.as_bytes());
        octal(&mut h[100..108], 0o644);
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        octal(&mut h[124..136], 1);
        octal(&mut h[136..148], 1_700_000_000);
        h[156] = b'S';
        h[257..265].copy_from_slice(b"ustar  \0");
        // The first sparse map entry: offset and length of the stored byte.
        octal(&mut h[386..398], real_size - 1);
        octal(&mut h[398..410], 1);
        h[482] = 0;
        octal(&mut h[483..495], real_size);
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        self.buf.extend_from_slice(&h);
        let mut data = [0u8; BLOCK];
        data[0] = b'x';
        self.buf.extend_from_slice(&data);
        self
    }

    pub fn tar(mut self) -> Vec<u8> {
        self.buf.extend(std::iter::repeat_n(0u8, BLOCK * 2));
        self.buf
    }

    pub fn gz(self) -> Vec<u8> {
        gzip(&self.tar())
    }
}

fn octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let text = format!("{value:0width$o}");
    field[..width].copy_from_slice(text.as_bytes());
    field[width] = 0;
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// A gzip'd tar holding one file of `size` zero bytes, written without holding it in memory.
pub fn zero_bomb(size: u64) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    let header = Tarball::new().entry(b"bomb", b'0', 0o644, b"", b"").buf;
    let mut header = header;
    octal(&mut header[124..136], size);
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    enc.write_all(&header).unwrap();
    let zeros = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        enc.write_all(&zeros[..n]).unwrap();
        left -= n as u64;
    }
    enc.write_all(&[0u8; BLOCK * 2]).unwrap();
    enc.finish().unwrap()
}
