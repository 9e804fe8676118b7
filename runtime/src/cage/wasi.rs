//! The WASI a claw sees: nothing granted.
//!
//! No preopened directories, no environment variables, no arguments, no
//! sockets and no name lookup; stdin is closed; stdout and stderr are
//! captured up to [`CAPTURED_OUTPUT_BYTES`] each and the rest is dropped
//! (writes still succeed, so a chatty claw is not failed for printing);
//! the wall and monotonic clocks tick in whole milliseconds
//! ([`CLOCK_RESOLUTION`]), so guest code cannot time host work finer than
//! that. Random numbers are Wasmtime's defaults (a CSPRNG for
//! `wasi:random/random`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::pipe::ClosedInputStream;
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx};

/// Bytes of guest stdout, and of stderr, kept per run.
pub const CAPTURED_OUTPUT_BYTES: usize = 64 * 1024;

/// Resolution of the clocks a guest reads.
pub const CLOCK_RESOLUTION: Duration = Duration::from_millis(1);

/// A WASI context with nothing granted, writing to `stdout` and `stderr`.
pub(super) fn context(stdout: &CapturedOutput, stderr: &CapturedOutput) -> WasiCtx {
    WasiCtx::builder()
        .stdin(ClosedInputStream)
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .wall_clock(CoarseWallClock)
        .monotonic_clock(CoarseMonotonicClock(Instant::now()))
        .build()
}

/// Guest output kept up to a capacity; what passes it is counted and
/// dropped, and the guest is told every write succeeded.
#[derive(Debug, Clone)]
pub struct CapturedOutput {
    capacity: usize,
    kept: Arc<Mutex<Vec<u8>>>,
    dropped: Arc<AtomicUsize>,
}

impl CapturedOutput {
    /// An empty capture keeping at most `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            kept: Arc::default(),
            dropped: Arc::default(),
        }
    }

    /// What was kept, as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.kept.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// Bytes written past the capacity and dropped.
    pub fn dropped(&self) -> usize {
        self.dropped.load(Ordering::Relaxed)
    }

    fn keep(&self, bytes: &[u8]) {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let room = self.capacity.saturating_sub(kept.len());
        let take = room.min(bytes.len());
        kept.extend_from_slice(&bytes[..take]);
        self.dropped
            .fetch_add(bytes.len() - take, Ordering::Relaxed);
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CapturedOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for CapturedOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.keep(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Always ready: the permit bounds one write, not the total.
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for CapturedOutput {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.keep(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

/// `d` rounded down to a whole number of [`CLOCK_RESOLUTION`]s.
fn coarse(d: Duration) -> Duration {
    let step = CLOCK_RESOLUTION.as_nanos();
    let nanos = d.as_nanos() / step * step;
    Duration::new(
        (nanos / 1_000_000_000) as u64,
        (nanos % 1_000_000_000) as u32,
    )
}

/// The host's wall clock in whole milliseconds.
struct CoarseWallClock;

impl HostWallClock for CoarseWallClock {
    fn resolution(&self) -> Duration {
        CLOCK_RESOLUTION
    }

    fn now(&self) -> Duration {
        coarse(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default(),
        )
    }
}

/// Nanoseconds since the run's store was made, in whole milliseconds.
struct CoarseMonotonicClock(Instant);

impl HostMonotonicClock for CoarseMonotonicClock {
    fn resolution(&self) -> u64 {
        CLOCK_RESOLUTION.as_nanos() as u64
    }

    fn now(&self) -> u64 {
        coarse(self.0.elapsed()).as_nanos() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_past_the_capacity_is_dropped_and_counted_not_failed() {
        let mut out = CapturedOutput::new(8);
        assert!(out.write(Bytes::from_static(b"hello ")).is_ok());
        assert!(out.write(Bytes::from_static(b"world")).is_ok());
        assert!(out.check_write().expect("ready") > 0);
        assert_eq!(out.text(), "hello wo");
        assert_eq!(out.dropped(), 3);
    }

    #[test]
    fn clocks_tick_in_whole_milliseconds() {
        assert_eq!(
            coarse(Duration::new(5, 123_456_789)),
            Duration::new(5, 123_000_000)
        );
        let wall = CoarseWallClock.now();
        assert_eq!(wall.subsec_nanos() % 1_000_000, 0);
        let mono = CoarseMonotonicClock(Instant::now() - Duration::from_nanos(2_500_000));
        assert_eq!(mono.now() % 1_000_000, 0);
        assert_eq!(mono.resolution(), 1_000_000);
    }
}
