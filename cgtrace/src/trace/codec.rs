//! The byte-level encoding of trace records: LEB128 varints, length-prefixed
//! strings, and a bounds-checked reader that reports where input ended.

/// Why a record could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("record ends early")]
    Short,
    #[error("varint longer than 10 bytes")]
    VarintTooLong,
    #[error("string is not UTF-8")]
    NotUtf8,
    #[error("value out of range")]
    OutOfRange,
}

/// Appends encoded values to a buffer.
#[derive(Debug, Default)]
pub struct Encoder {
    pub bytes: Vec<u8>,
}

impl Encoder {
    pub fn u64(&mut self, mut value: u64) {
        loop {
            let byte = u8::try_from(value & 0x7f).unwrap_or(0);
            value >>= 7;
            if value == 0 {
                self.bytes.push(byte);
                return;
            }
            self.bytes.push(byte | 0x80);
        }
    }

    /// Signed values, zig-zag encoded so small negatives stay short.
    pub fn i64(&mut self, value: i64) {
        self.u64(((value << 1) ^ (value >> 63)).cast_unsigned());
    }

    pub fn u8(&mut self, value: u8) {
        self.bytes.push(value);
    }

    pub fn str(&mut self, value: &str) {
        self.u64(value.len() as u64);
        self.bytes.extend_from_slice(value.as_bytes());
    }

    /// `None` as 0, `Some(v)` as `v + 1` (values up to `u64::MAX - 1`).
    pub fn opt_u64(&mut self, value: Option<u64>) {
        self.u64(value.map_or(0, |v| v.saturating_add(1)));
    }

    pub fn opt_str(&mut self, value: Option<&str>) {
        match value {
            None => self.u8(0),
            Some(text) => {
                self.u8(1);
                self.str(text);
            }
        }
    }
}

/// Reads encoded values from a slice.
#[derive(Debug)]
pub struct Decoder<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Decoder<'a> {
    #[must_use]
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.at >= self.bytes.len()
    }

    /// Bytes not read yet.
    #[must_use]
    pub fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.at)
    }

    pub fn u8(&mut self) -> Result<u8, CodecError> {
        let byte = *self.bytes.get(self.at).ok_or(CodecError::Short)?;
        self.at += 1;
        Ok(byte)
    }

    pub fn u64(&mut self) -> Result<u64, CodecError> {
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let byte = self.u8()?;
            if shift == 63 && byte > 1 {
                return Err(CodecError::VarintTooLong);
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(CodecError::VarintTooLong)
    }

    pub fn i64(&mut self) -> Result<i64, CodecError> {
        let raw = self.u64()?;
        Ok((raw >> 1).cast_signed() ^ -(raw & 1).cast_signed())
    }

    pub fn u32(&mut self) -> Result<u32, CodecError> {
        u32::try_from(self.u64()?).map_err(|_| CodecError::OutOfRange)
    }

    pub fn bytes(&mut self, len: usize) -> Result<&'a [u8], CodecError> {
        let end = self.at.checked_add(len).ok_or(CodecError::Short)?;
        let slice = self.bytes.get(self.at..end).ok_or(CodecError::Short)?;
        self.at = end;
        Ok(slice)
    }

    pub fn str(&mut self) -> Result<String, CodecError> {
        let len = usize::try_from(self.u64()?).map_err(|_| CodecError::OutOfRange)?;
        let bytes = self.bytes(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| CodecError::NotUtf8)
    }

    pub fn opt_u64(&mut self) -> Result<Option<u64>, CodecError> {
        Ok(self.u64()?.checked_sub(1))
    }

    pub fn opt_str(&mut self) -> Result<Option<String>, CodecError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.str()?)),
            _ => Err(CodecError::OutOfRange),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{CodecError, Decoder, Encoder};

    #[test]
    fn values_round_trip() {
        let mut e = Encoder::default();
        for v in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            e.u64(v);
        }
        for v in [0, -1, 1, i64::MIN, i64::MAX] {
            e.i64(v);
        }
        e.str("/kubepods/pod-ü");
        e.opt_u64(None);
        e.opt_u64(Some(0));
        e.opt_str(Some("x"));
        e.opt_str(None);
        let mut d = Decoder::new(&e.bytes);
        for v in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            assert_eq!(d.u64(), Ok(v));
        }
        for v in [0, -1, 1, i64::MIN, i64::MAX] {
            assert_eq!(d.i64(), Ok(v));
        }
        assert_eq!(d.str().unwrap(), "/kubepods/pod-ü");
        assert_eq!(d.opt_u64(), Ok(None));
        assert_eq!(d.opt_u64(), Ok(Some(0)));
        assert_eq!(d.opt_str(), Ok(Some("x".into())));
        assert_eq!(d.opt_str(), Ok(None));
        assert!(d.is_empty());
        assert_eq!(d.u8(), Err(CodecError::Short));
    }

    #[test]
    fn bad_input_is_an_error() {
        assert_eq!(
            Decoder::new(&[0x80; 11]).u64(),
            Err(CodecError::VarintTooLong)
        );
        assert_eq!(Decoder::new(&[0xff; 9]).u64(), Err(CodecError::Short));
        assert_eq!(Decoder::new(&[5, b'a']).str(), Err(CodecError::Short));
        assert_eq!(Decoder::new(&[1, 0xff]).str(), Err(CodecError::NotUtf8));
        let mut huge = Encoder::default();
        huge.u64(u64::MAX);
        assert_eq!(Decoder::new(&huge.bytes).str(), Err(CodecError::Short));
    }
}
