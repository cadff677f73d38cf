//! Counts the bytes that come out of the decompressor, so the size limit applies to real bytes
//! (not to sizes an archive claims in its headers) and a gzip bomb stops as soon as it crosses
//! the limit, whatever part of the tar stream (file data, headers, padding, trailing zeros) the
//! bytes land in.

use std::cell::Cell;
use std::io::{self, Read};
use std::rc::Rc;

/// Metadata the tar reader buffers whole in memory (GNU long names, PAX headers) is bounded far
/// below any real need, so a hostile header cannot grow memory with the archive.
pub const METADATA_LIMIT: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    Size { limit: u64 },
    Metadata,
}

#[derive(Debug, Default)]
pub struct Meter {
    total: Cell<u64>,
    limit: Option<u64>,
    in_metadata: Cell<bool>,
    metadata: Cell<u64>,
    exceeded: Cell<Option<Exceeded>>,
}

impl Meter {
    pub fn new(limit: Option<u64>) -> Rc<Self> {
        Rc::new(Meter {
            limit,
            ..Meter::default()
        })
    }

    pub fn exceeded(&self) -> Option<Exceeded> {
        self.exceeded.get()
    }

    /// Between entries the tar reader reads headers and whatever metadata precedes the next
    /// entry; those reads are bounded by [`METADATA_LIMIT`].
    pub fn enter_metadata(&self) {
        self.metadata.set(0);
        self.in_metadata.set(true);
    }

    pub fn leave_metadata(&self) {
        self.in_metadata.set(false);
    }

    fn record(&self, n: u64) -> io::Result<()> {
        let total = self.total.get() + n;
        self.total.set(total);
        if let Some(limit) = self.limit
            && total > limit
        {
            return Err(self.fail(Exceeded::Size { limit }));
        }
        if self.in_metadata.get() {
            let meta = self.metadata.get() + n;
            self.metadata.set(meta);
            if meta > METADATA_LIMIT {
                return Err(self.fail(Exceeded::Metadata));
            }
        }
        Ok(())
    }

    fn fail(&self, why: Exceeded) -> io::Error {
        self.exceeded.set(Some(why));
        io::Error::other("archive limit exceeded")
    }
}

pub struct Metered<R> {
    inner: R,
    meter: Rc<Meter>,
}

impl<R> Metered<R> {
    pub fn new(inner: R, meter: Rc<Meter>) -> Self {
        Metered { inner, meter }
    }
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.meter.exceeded().is_some() {
            return Err(io::Error::other("archive limit exceeded"));
        }
        let n = self.inner.read(buf)?;
        self.meter.record(n as u64)?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_past_the_limit_fails_and_says_why() {
        let meter = Meter::new(Some(10));
        let mut r = Metered::new(&[0u8; 32][..], meter.clone());
        let mut buf = [0u8; 8];
        assert_eq!(r.read(&mut buf).unwrap(), 8);
        assert!(r.read(&mut buf).is_err());
        assert_eq!(meter.exceeded(), Some(Exceeded::Size { limit: 10 }));
        assert!(r.read(&mut buf).is_err(), "a tripped meter stays tripped");
    }

    #[test]
    fn metadata_reads_are_bounded_separately() {
        let meter = Meter::new(None);
        let data = vec![0u8; (METADATA_LIMIT + 1) as usize];
        let mut r = Metered::new(&data[..], meter.clone());
        meter.enter_metadata();
        assert!(std::io::copy(&mut r, &mut std::io::sink()).is_err());
        assert_eq!(meter.exceeded(), Some(Exceeded::Metadata));
    }
}
