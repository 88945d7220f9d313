//! A TCP listener whose connections can be killed from a handler, so the
//! [`Fault::DropConnection`](crate::Fault::DropConnection) fault really closes the socket
//! without an HTTP response.
//!
//! Each accepted stream shares an `Arc<AtomicBool>` with the [`ConnectionHandle`] that axum
//! hands to handlers as `ConnectInfo`. Once a handler sets it, every read and write on the
//! stream fails, hyper abandons the connection and the socket is closed with nothing written.
//! A handler can also replace the response with raw bytes (not HTTP), written in its place
//! before the connection is failed the same way.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Per-connection information handed to handlers.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionHandle {
    pub(crate) remote: SocketAddr,
    killed: Arc<AtomicBool>,
    replacement: Arc<Mutex<Vec<u8>>>,
}

impl ConnectionHandle {
    /// Makes the connection fail: the pending response is never written.
    pub(crate) fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
    }

    /// Sends `bytes` instead of the pending response, then fails the connection: for answers
    /// that are not HTTP at all.
    pub(crate) fn replace_output(&self, bytes: Vec<u8>) {
        *lock(&self.replacement) = bytes;
    }
}

fn lock(bytes: &Mutex<Vec<u8>>) -> std::sync::MutexGuard<'_, Vec<u8>> {
    bytes.lock().unwrap_or_else(|e| e.into_inner())
}

impl Connected<IncomingStream<'_, KillableListener>> for ConnectionHandle {
    fn connect_info(stream: IncomingStream<'_, KillableListener>) -> Self {
        stream.remote_addr().clone()
    }
}

#[derive(Debug)]
pub(crate) struct KillableListener {
    inner: TcpListener,
}

impl KillableListener {
    pub(crate) fn new(inner: TcpListener) -> Self {
        Self { inner }
    }
}

impl Listener for KillableListener {
    type Io = KillableStream;
    type Addr = ConnectionHandle;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, remote)) => {
                    let _ = stream.set_nodelay(true);
                    let killed = Arc::new(AtomicBool::new(false));
                    let replacement = Arc::new(Mutex::new(Vec::new()));
                    return (
                        KillableStream {
                            inner: stream,
                            killed: killed.clone(),
                            replacement: replacement.clone(),
                        },
                        ConnectionHandle {
                            remote,
                            killed,
                            replacement,
                        },
                    );
                }
                // Out of file descriptors and the like: back off instead of spinning.
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(ConnectionHandle {
            remote: self.inner.local_addr()?,
            killed: Arc::new(AtomicBool::new(false)),
            replacement: Arc::new(Mutex::new(Vec::new())),
        })
    }
}

#[derive(Debug)]
pub(crate) struct KillableStream {
    inner: TcpStream,
    killed: Arc<AtomicBool>,
    replacement: Arc<Mutex<Vec<u8>>>,
}

impl KillableStream {
    fn check(&self) -> io::Result<()> {
        if self.killed.load(Ordering::SeqCst) {
            Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection dropped by an injected fault",
            ))
        } else {
            Ok(())
        }
    }

    /// Writes the replacement output, if any, instead of what hyper writes (`len` bytes, which
    /// are reported written); once it is all out the connection is killed.
    fn poll_replacement(
        &mut self,
        cx: &mut Context<'_>,
        len: usize,
    ) -> Option<Poll<io::Result<usize>>> {
        let mut replacement = lock(&self.replacement);
        if replacement.is_empty() {
            return None;
        }
        while !replacement.is_empty() {
            match Pin::new(&mut self.inner).poll_write(cx, &replacement) {
                Poll::Ready(Ok(0)) => break,
                Poll::Ready(Ok(n)) => {
                    replacement.drain(..n);
                }
                Poll::Ready(Err(error)) => return Some(Poll::Ready(Err(error))),
                Poll::Pending => return Some(Poll::Pending),
            }
        }
        replacement.clear();
        self.killed.store(true, Ordering::SeqCst);
        Some(Poll::Ready(Ok(len)))
    }
}

impl AsyncRead for KillableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(poll) = self.poll_replacement(cx, buf.len()) {
            return poll;
        }
        self.check()?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let len = bufs.iter().map(|b| b.len()).sum();
        if let Some(poll) = self.poll_replacement(cx, len) {
            return poll;
        }
        self.check()?;
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
