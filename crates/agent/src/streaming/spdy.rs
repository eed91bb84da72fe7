//! SPDY/3 framing, the part of it `kubectl port-forward` speaks: frames,
//! and header blocks compressed with zlib over the protocol's fixed
//! dictionary (one zlib stream per direction for the whole connection).
//!
//! Flow control is not implemented: the client (moby/spdystream) neither
//! sends nor honours WINDOW_UPDATE.

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The largest frame accepted: a data frame is at most what one write of the
/// client carries (32 KiB in practice); header blocks are tiny.
const MAX_FRAME: usize = 1 << 20;
/// The largest decompressed header block accepted.
const MAX_HEADERS: usize = 64 * 1024;

/// SYN_STREAM: a peer opens a stream.
const SYN_STREAM: u16 = 1;
/// SYN_REPLY: the answer to SYN_STREAM.
const SYN_REPLY: u16 = 2;
/// RST_STREAM: a stream ends abnormally.
const RST_STREAM: u16 = 3;
/// PING: echoed by the receiver.
const PING: u16 = 6;
/// GOAWAY: the connection is closing.
const GOAWAY: u16 = 7;
/// FLAG_FIN: the sender's half of the stream is done.
const FLAG_FIN: u8 = 1;

/// Why a SPDY connection failed.
#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    /// Reading from the connection failed.
    #[error("reading SPDY: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent something that is not SPDY/3.
    #[error("SPDY protocol error: {0}")]
    Protocol(String),
}

fn protocol(what: impl Into<String>) -> SpdyError {
    SpdyError::Protocol(what.into())
}

/// A frame received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A stream opened by the peer, with its headers (names lower-case).
    SynStream {
        /// The stream's ID.
        stream_id: u32,
        /// The peer sends nothing more on it.
        fin: bool,
        /// Its headers.
        headers: Vec<(String, String)>,
    },
    /// Data on a stream.
    Data {
        /// The stream's ID.
        stream_id: u32,
        /// The peer's half of the stream ends here.
        fin: bool,
        /// The bytes.
        data: Bytes,
    },
    /// The peer abandoned a stream.
    RstStream {
        /// The stream's ID.
        stream_id: u32,
    },
    /// A ping to echo.
    Ping(u32),
    /// The peer is closing the connection.
    GoAway,
    /// Any other frame (SETTINGS, WINDOW_UPDATE, HEADERS, ...): ignored.
    Other,
}

/// The SPDY/3 header-compression dictionary (draft 3, section 2.6.10.1):
/// each of these words with a 4-byte big-endian length before it, then
/// [`DICTIONARY_TAIL`] as it is.
const DICTIONARY_WORDS: &[&str] = &[
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];

/// The dictionary's unprefixed end: status codes and phrases, dates, types.
const DICTIONARY_TAIL: &str = concat!(
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request",
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented",
    "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,",
    "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=",
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
);

/// The dictionary's bytes.
fn dictionary() -> Vec<u8> {
    let mut out = Vec::with_capacity(1423);
    for word in DICTIONARY_WORDS {
        out.extend_from_slice(&(word.len() as u32).to_be_bytes());
        out.extend_from_slice(word.as_bytes());
    }
    out.extend_from_slice(DICTIONARY_TAIL.as_bytes());
    out
}

/// One connection's header compression state, both directions.
pub struct Codec {
    inflate: Decompress,
    deflate: Compress,
    dictionary: Vec<u8>,
}

impl Default for Codec {
    fn default() -> Self {
        Codec {
            inflate: Decompress::new(true),
            // Written without a preset dictionary: a zlib reader given one
            // accepts a stream that does not ask for it.
            deflate: Compress::new(Compression::fast(), true),
            dictionary: dictionary(),
        }
    }
}

/// Reads one raw frame: its 8-byte header and payload; `None` at a clean EOF.
pub async fn read_raw(
    reader: &mut (impl AsyncRead + Unpin),
) -> Result<Option<([u8; 8], Vec<u8>)>, SpdyError> {
    let mut head = [0u8; 8];
    match reader.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
    if len > MAX_FRAME {
        return Err(protocol(format!("frame of {len} bytes")));
    }
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload).await?;
    Ok(Some((head, payload)))
}

fn be32(b: &[u8], at: usize) -> Result<u32, SpdyError> {
    b.get(at..at + 4)
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
        .map(u32::from_be_bytes)
        .ok_or_else(|| protocol("frame too short"))
}

impl Codec {
    /// Decodes a raw frame read by [`read_raw`].
    pub fn decode(&mut self, head: [u8; 8], payload: Vec<u8>) -> Result<Frame, SpdyError> {
        let flags = head[4];
        let fin = flags & FLAG_FIN != 0;
        if head[0] & 0x80 == 0 {
            let stream_id = be32(&head, 0)? & 0x7fff_ffff;
            return Ok(Frame::Data {
                stream_id,
                fin,
                data: Bytes::from(payload),
            });
        }
        let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
        if version != 3 {
            return Err(protocol(format!("SPDY version {version}")));
        }
        match u16::from_be_bytes([head[2], head[3]]) {
            SYN_STREAM => {
                let stream_id = be32(&payload, 0)? & 0x7fff_ffff;
                let block = payload
                    .get(10..)
                    .ok_or_else(|| protocol("short SYN_STREAM"))?;
                let headers = self.headers(block)?;
                Ok(Frame::SynStream {
                    stream_id,
                    fin,
                    headers,
                })
            }
            RST_STREAM => Ok(Frame::RstStream {
                stream_id: be32(&payload, 0)? & 0x7fff_ffff,
            }),
            PING => Ok(Frame::Ping(be32(&payload, 0)?)),
            GOAWAY => Ok(Frame::GoAway),
            // SYN_REPLY and HEADERS carry header blocks: they must still go
            // through the decompressor, whose state spans frames.
            SYN_REPLY | 8 => {
                if let Some(block) = payload.get(4..) {
                    self.headers(block)?;
                }
                Ok(Frame::Other)
            }
            _ => Ok(Frame::Other),
        }
    }

    /// Decompresses and parses a header block.
    fn headers(&mut self, block: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
        let mut out = Vec::with_capacity(256);
        let start_in = self.inflate.total_in();
        loop {
            let before = (self.inflate.total_in(), self.inflate.total_out());
            let used = (self.inflate.total_in() - start_in) as usize;
            let input = &block[used.min(block.len())..];
            if out.len() == out.capacity() {
                if out.len() >= MAX_HEADERS {
                    return Err(protocol("header block too large"));
                }
                out.reserve(out.len());
            }
            match self
                .inflate
                .decompress_vec(input, &mut out, FlushDecompress::Sync)
            {
                Ok(Status::StreamEnd) => break,
                Ok(_) => {
                    let used = (self.inflate.total_in() - start_in) as usize;
                    let stalled = before == (self.inflate.total_in(), self.inflate.total_out());
                    if used >= block.len() && out.len() < out.capacity() {
                        break;
                    }
                    if stalled && out.len() < out.capacity() {
                        return Err(protocol("header block truncated"));
                    }
                }
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(&self.dictionary)
                        .map_err(|e| protocol(format!("header dictionary: {e}")))?;
                }
                Err(e) => return Err(protocol(format!("header block: {e}"))),
            }
        }
        parse_block(&out)
    }

    /// A SYN_REPLY with no headers for `stream_id`.
    pub fn syn_reply(&mut self, stream_id: u32) -> Vec<u8> {
        // An empty header block: a count of zero pairs.
        let mut compressed = Vec::with_capacity(64);
        let _ =
            self.deflate
                .compress_vec(&0u32.to_be_bytes(), &mut compressed, FlushCompress::Sync);
        let mut payload = Vec::with_capacity(4 + compressed.len());
        payload.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
        payload.extend_from_slice(&compressed);
        control(SYN_REPLY, 0, &payload)
    }
}

fn parse_block(b: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
    let count = be32(b, 0)? as usize;
    let mut at = 4;
    let mut out = Vec::with_capacity(count.min(64));
    let field = |at: &mut usize| -> Result<String, SpdyError> {
        let len = be32(b, *at)? as usize;
        let s = b
            .get(*at + 4..*at + 4 + len)
            .ok_or_else(|| protocol("header block truncated"))?;
        *at += 4 + len;
        Ok(String::from_utf8_lossy(s).into_owned())
    };
    for _ in 0..count {
        let name = field(&mut at)?;
        let value = field(&mut at)?;
        out.push((name.to_ascii_lowercase(), value));
    }
    Ok(out)
}

fn control(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&(0x8003u16).to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.push(flags);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(payload);
    out
}

/// A DATA frame.
pub fn data(stream_id: u32, fin: bool, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + bytes.len());
    out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
    out.push(if fin { FLAG_FIN } else { 0 });
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(bytes);
    out
}

/// A PING frame (the echo of the peer's).
pub fn ping(id: u32) -> Vec<u8> {
    control(PING, 0, &id.to_be_bytes())
}

/// A RST_STREAM frame with status CANCEL.
pub fn rst_stream(stream_id: u32) -> Vec<u8> {
    let mut payload = (stream_id & 0x7fff_ffff).to_be_bytes().to_vec();
    payload.extend_from_slice(&5u32.to_be_bytes());
    control(RST_STREAM, 0, &payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    #[test]
    fn the_dictionary_is_the_specifications() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        let digest = sha2::Sha256::digest(&d);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02"
        );
    }

    /// What a Go client sends: headers compressed against the dictionary.
    fn client_syn_stream(
        deflate: &mut Compress,
        stream_id: u32,
        headers: &[(&str, &str)],
    ) -> Vec<u8> {
        let mut block = (headers.len() as u32).to_be_bytes().to_vec();
        for (k, v) in headers {
            for s in [k, v] {
                block.extend_from_slice(&(s.len() as u32).to_be_bytes());
                block.extend_from_slice(s.as_bytes());
            }
        }
        let mut compressed = Vec::with_capacity(block.len() + 64);
        deflate
            .compress_vec(&block, &mut compressed, FlushCompress::Sync)
            .expect("compress");
        let mut payload = stream_id.to_be_bytes().to_vec();
        payload.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        payload.extend_from_slice(&compressed);
        control(SYN_STREAM, 0, &payload)
    }

    fn split(frame: &[u8]) -> ([u8; 8], Vec<u8>) {
        let head: [u8; 8] = frame[..8].try_into().expect("head");
        (head, frame[8..].to_vec())
    }

    #[test]
    fn header_blocks_compressed_with_the_dictionary_decode_across_frames() {
        let mut deflate = Compress::new(Compression::best(), true);
        deflate.set_dictionary(&dictionary()).expect("dictionary");
        let mut codec = Codec::default();
        for (id, kind) in [(1, "error"), (3, "data")] {
            let f = client_syn_stream(
                &mut deflate,
                id,
                &[("streamType", kind), ("port", "8080"), ("requestID", "0")],
            );
            let (head, payload) = split(&f);
            let frame = codec.decode(head, payload).expect("decode");
            assert_eq!(
                frame,
                Frame::SynStream {
                    stream_id: id,
                    fin: false,
                    headers: vec![
                        ("streamtype".into(), kind.into()),
                        ("port".into(), "8080".into()),
                        ("requestid".into(), "0".into()),
                    ],
                }
            );
        }
    }

    #[test]
    fn replies_are_a_zlib_stream_a_reader_with_the_dictionary_reads() {
        let mut codec = Codec::default();
        let mut inflate = Decompress::new(true);
        for id in [1u32, 3] {
            let f = codec.syn_reply(id);
            assert_eq!(&f[..4], &[0x80, 3, 0, 2]);
            assert_eq!(be32(&f, 8).expect("id"), id);
            let mut out = Vec::with_capacity(64);
            inflate
                .decompress_vec(&f[12..], &mut out, FlushDecompress::Sync)
                .expect("inflate");
            assert_eq!(out, 0u32.to_be_bytes());
        }
    }

    #[test]
    fn data_frames_round_trip_and_garbage_is_an_error() {
        let f = data(5, true, b"hello");
        let mut codec = Codec::default();
        let (head, payload) = split(&f);
        assert_eq!(
            codec.decode(head, payload).expect("data"),
            Frame::Data {
                stream_id: 5,
                fin: true,
                data: Bytes::from_static(b"hello")
            }
        );
        let (head, payload) = split(&ping(7));
        assert_eq!(codec.decode(head, payload).expect("ping"), Frame::Ping(7));
        // A SYN_STREAM whose header block is not zlib.
        let bad = control(SYN_STREAM, 0, &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2, 3]);
        let (head, payload) = split(&bad);
        assert!(codec.decode(head, payload).is_err());
        // Another version.
        let mut v2 = ping(1);
        v2[1] = 2;
        let (head, payload) = split(&v2);
        assert!(codec.decode(head, payload).is_err());
    }
}
