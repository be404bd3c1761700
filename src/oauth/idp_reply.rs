//! What came back from an IdP call, as nginx saw it: how the subrequest
//! ended, the status, the content type and the body. Whether it could be
//! read at all is decided here, once, for every kind of call.

/// The largest IdP answer the module reads.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// What nginx tells us about a finished subrequest to the IdP.
#[derive(Debug, Clone, Copy)]
pub struct IdpReply<'a> {
    /// The code the subrequest was finalized with: 0 when the upstream
    /// finished normally, an HTTP status or NGX_ERROR (-1) when it failed.
    pub finalize_rc: isize,
    /// The IdP's status line, 0 if no response header arrived.
    pub status: usize,
    /// The answer's `Content-Type`, empty if none.
    pub content_type: &'a [u8],
    pub body: &'a [u8],
}

/// Why an answer could not be read at all, whatever it was meant to say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Timeout,
    Unreachable,
    Incomplete,
    TooLarge(usize),
}

const GATEWAY_TIME_OUT: isize = 504;

impl<'a> IdpReply<'a> {
    pub fn new(finalize_rc: isize, status: usize, body: &'a [u8]) -> IdpReply<'a> {
        IdpReply {
            finalize_rc,
            status,
            content_type: b"",
            body,
        }
    }

    pub fn with_content_type(self, content_type: &'a [u8]) -> IdpReply<'a> {
        IdpReply {
            content_type,
            ..self
        }
    }

    /// `Ok` when a complete answer of at most `limit` bytes arrived.
    pub fn transport(&self, limit: usize) -> Result<(), Transport> {
        if self.finalize_rc == GATEWAY_TIME_OUT {
            Err(Transport::Timeout)
        } else if self.status == 0 {
            Err(Transport::Unreachable)
        } else if self.finalize_rc != 0 {
            Err(Transport::Incomplete)
        } else if self.body.len() > limit {
            Err(Transport::TooLarge(self.body.len()))
        } else {
            Ok(())
        }
    }

    /// The media type of `Content-Type`, lower-cased, without parameters.
    pub fn media_type(&self) -> String {
        let end = self
            .content_type
            .iter()
            .position(|&b| b == b';')
            .unwrap_or(self.content_type.len());
        String::from_utf8_lossy(self.content_type[..end].trim_ascii()).to_ascii_lowercase()
    }
}
