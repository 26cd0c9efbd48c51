//! Reads an answer body up to a limit, handing back the untouched stream
//! when the body turns out larger.
//!
//! Why not `http_body_util::Limited`: past the limit the answer must still
//! reach the service whole, so the bytes already read are put back in front
//! of the rest of the stream (`ProxyBody::with_prefix`) instead of being
//! lost with an error.

use bytes::{Bytes, BytesMut};
use http_body::Body;
use http_body_util::BodyExt;

use crate::boxed::BoxError;
use crate::proxy::body::ProxyBody;

/// The outcome of reading a body up to a limit.
#[derive(Debug)]
pub enum Buffered {
    /// The whole body, within the limit.
    Whole(Bytes),
    /// Over the limit: the same body, with what was read put back in front.
    TooLarge(ProxyBody),
}

/// Reads `body` whole if it is at most `limit` bytes. Trailers, which a
/// factory JSON answer never has, are dropped. A read error (the factory
/// stopped, reset, or paused too long) is returned as is.
pub async fn read_limited(mut body: ProxyBody, limit: usize) -> Result<Buffered, BoxError> {
    let (read, complete) = read_upto(&mut body, limit).await?;
    Ok(if complete {
        Buffered::Whole(read)
    } else {
        Buffered::TooLarge(body.with_prefix(read))
    })
}

/// Reads frames until the end (`true`) or until more than `limit` bytes
/// were read (`false`), returning what was read. One frame costs no copy.
async fn read_upto<B>(body: &mut B, limit: usize) -> Result<(Bytes, bool), B::Error>
where
    B: Body<Data = Bytes> + Unpin,
{
    let mut first: Option<Bytes> = None;
    let mut joined: Option<BytesMut> = None;
    let mut len = 0usize;
    let mut complete = true;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        len = len.saturating_add(data.len());
        match (&mut first, &mut joined) {
            (None, None) => first = Some(data),
            (Some(f), None) => {
                let mut buf = BytesMut::with_capacity(len.min(limit.saturating_add(1)));
                buf.extend_from_slice(f);
                buf.extend_from_slice(&data);
                first = None;
                joined = Some(buf);
            }
            (_, Some(buf)) => buf.extend_from_slice(&data),
        }
        if len > limit {
            complete = false;
            break;
        }
    }
    let read = match (first, joined) {
        (Some(f), _) => f,
        (None, Some(buf)) => buf.freeze(),
        (None, None) => Bytes::new(),
    };
    Ok((read, complete))
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::VecDeque;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use http_body::Frame;

    /// A body of several frames, some empty, then trailers.
    struct Frames(VecDeque<Frame<Bytes>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    fn frames() -> Frames {
        let mut f: VecDeque<_> = ["{\"a\":", "", "1", "}"]
            .into_iter()
            .map(|s| Frame::data(Bytes::from_static(s.as_bytes())))
            .collect();
        f.push_back(Frame::trailers(http::HeaderMap::new()));
        Frames(f)
    }

    #[tokio::test]
    async fn several_frames_are_joined_and_the_limit_stops_reading() {
        let (b, complete) = read_upto(&mut frames(), 64).await.expect("read");
        assert!(complete);
        assert_eq!(b, "{\"a\":1}");
        let mut body = frames();
        let (b, complete) = read_upto(&mut body, 5).await.expect("read");
        assert!(!complete);
        assert_eq!(b, "{\"a\":1", "stops at the first frame past the limit");
        assert_eq!(body.0.len(), 2, "the rest stays unread");
    }

    #[tokio::test]
    async fn small_bodies_come_back_whole_and_large_ones_intact() {
        match read_limited(ProxyBody::full("hello"), 5)
            .await
            .expect("read")
        {
            Buffered::Whole(b) => assert_eq!(b, "hello"),
            Buffered::TooLarge(_) => panic!("5 bytes fit a limit of 5"),
        }
        match read_limited(ProxyBody::empty(), 5).await.expect("read") {
            Buffered::Whole(b) => assert!(b.is_empty()),
            Buffered::TooLarge(_) => panic!("empty fits"),
        }
        match read_limited(ProxyBody::full("hello!"), 5)
            .await
            .expect("read")
        {
            Buffered::TooLarge(body) => {
                let all = body.collect().await.expect("body").to_bytes();
                assert_eq!(all, "hello!");
            }
            Buffered::Whole(_) => panic!("6 bytes exceed 5"),
        }
    }
}
