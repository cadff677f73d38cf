//! Artifact digests as Flux writes them in `status.artifact.digest`.
//!
//! The accepted forms are exactly those Flux's fetcher accepts (`algo:lowercase-hex` for sha256,
//! sha384, sha512 and blake3, or a bare hex string as the legacy v1beta2 sha256 checksum), so a
//! digest that source-controller wrote always parses and anything else is refused before a byte
//! is downloaded.

use std::fmt;
use std::str::FromStr;

use sha2::Digest as _;

/// One line a user can act on, appended to every parse error.
pub const ACCEPTED_FORMS: &str = "accepted forms: sha256:<64 hex>, sha384:<96 hex>, \
     sha512:<128 hex>, blake3:<64 hex> (lowercase hex), or a bare 64-hex legacy sha256 checksum";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha256,
    Sha384,
    Sha512,
    Blake3,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha384 => "sha384",
            Algorithm::Sha512 => "sha512",
            Algorithm::Blake3 => "blake3",
        }
    }

    /// Length of the hex encoding of this algorithm's output.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 | Algorithm::Blake3 => 64,
            Algorithm::Sha384 => 96,
            Algorithm::Sha512 => 128,
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        [
            Algorithm::Sha256,
            Algorithm::Sha384,
            Algorithm::Sha512,
            Algorithm::Blake3,
        ]
        .into_iter()
        .find(|a| a.name() == name)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    #[error("the digest is empty; {ACCEPTED_FORMS}")]
    Empty,
    #[error("digest algorithm {0:?} is not supported; {ACCEPTED_FORMS}")]
    UnsupportedAlgorithm(String),
    #[error(
        "{algo} digest must be {expected} lowercase hex characters, got {got}; {ACCEPTED_FORMS}"
    )]
    WrongLength {
        algo: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("{algo} digest must be lowercase hex ([0-9a-f]); {ACCEPTED_FORMS}")]
    NotLowercaseHex { algo: &'static str },
}

/// A parsed, well-formed digest. Its `Display` is the canonical `algo:hex` form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn hasher(&self) -> Hasher {
        Hasher::new(self.algorithm)
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(DigestError::Empty);
        }
        let (algo, hex) = match s.split_once(':') {
            Some((algo, hex)) => (
                Algorithm::from_name(algo)
                    .ok_or_else(|| DigestError::UnsupportedAlgorithm(algo.to_string()))?,
                hex,
            ),
            // A bare hex string is the deprecated `status.artifact.checksum` (sha256).
            None => (Algorithm::Sha256, s),
        };
        if hex.len() != algo.hex_len() {
            return Err(DigestError::WrongLength {
                algo: algo.name(),
                expected: algo.hex_len(),
                got: hex.len(),
            });
        }
        if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(DigestError::NotLowercaseHex { algo: algo.name() });
        }
        Ok(Digest {
            algorithm: algo,
            hex: hex.to_string(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.name(), self.hex)
    }
}

/// Incremental hasher for any supported algorithm.
pub enum Hasher {
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
    Blake3(Box<blake3::Hasher>),
}

impl Hasher {
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha384 => Hasher::Sha384(sha2::Sha384::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
            Algorithm::Blake3 => Hasher::Blake3(Box::new(blake3::Hasher::new())),
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha384(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
            Hasher::Blake3(h) => {
                h.update(bytes);
            }
        }
    }

    pub fn finalize(self) -> Digest {
        let (algorithm, hex) = match self {
            Hasher::Sha256(h) => (Algorithm::Sha256, to_hex(&h.finalize())),
            Hasher::Sha384(h) => (Algorithm::Sha384, to_hex(&h.finalize())),
            Hasher::Sha512(h) => (Algorithm::Sha512, to_hex(&h.finalize())),
            Hasher::Blake3(h) => (Algorithm::Blake3, to_hex(h.finalize().as_bytes())),
        };
        Digest { algorithm, hex }
    }
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn a_prefixed_sha256_digest_round_trips() {
        let d: Digest = format!("sha256:{EMPTY_SHA256}").parse().unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.to_string(), format!("sha256:{EMPTY_SHA256}"));
    }

    #[test]
    fn a_bare_hex_string_is_a_legacy_sha256_checksum() {
        let d: Digest = EMPTY_SHA256.parse().unwrap();
        assert_eq!(d.to_string(), format!("sha256:{EMPTY_SHA256}"));
    }

    #[test]
    fn every_supported_algorithm_hashes_to_the_form_it_parses() {
        for algo in [
            Algorithm::Sha256,
            Algorithm::Sha384,
            Algorithm::Sha512,
            Algorithm::Blake3,
        ] {
            let mut h = Hasher::new(algo);
            h.update(b"hello ");
            h.update(b"world");
            let d = h.finalize();
            let reparsed: Digest = d.to_string().parse().unwrap();
            assert_eq!(reparsed, d, "{}", algo.name());
        }
    }

    #[test]
    fn known_sha256_and_blake3_values_match() {
        assert_eq!(
            Hasher::new(Algorithm::Sha256).finalize().to_string(),
            format!("sha256:{EMPTY_SHA256}")
        );
        assert_eq!(
            Hasher::new(Algorithm::Blake3).finalize().to_string(),
            "blake3:af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
    }

    #[test]
    fn empty_sha1_unknown_uppercase_and_wrong_length_are_refused() {
        assert_eq!("".parse::<Digest>(), Err(DigestError::Empty));
        assert_eq!(
            "sha1:4c6200000000000000000000000000000000000a".parse::<Digest>(),
            Err(DigestError::UnsupportedAlgorithm("sha1".into()))
        );
        assert_eq!(
            "md5:d41d8cd98f00b204e9800998ecf8427e".parse::<Digest>(),
            Err(DigestError::UnsupportedAlgorithm("md5".into()))
        );
        assert_eq!(
            format!("sha256:{}", EMPTY_SHA256.to_uppercase()).parse::<Digest>(),
            Err(DigestError::NotLowercaseHex { algo: "sha256" })
        );
        assert_eq!(
            format!("sha512:{EMPTY_SHA256}").parse::<Digest>(),
            Err(DigestError::WrongLength {
                algo: "sha512",
                expected: 128,
                got: 64
            })
        );
        assert_eq!(
            "abc".parse::<Digest>(),
            Err(DigestError::WrongLength {
                algo: "sha256",
                expected: 64,
                got: 3
            })
        );
    }

    #[test]
    fn every_refusal_names_the_accepted_forms() {
        for bad in ["", "sha1:00", "SHA256:00", "sha256:xyz"] {
            let err = bad.parse::<Digest>().unwrap_err().to_string();
            assert!(err.contains("accepted forms"), "{bad}: {err}");
        }
    }
}
