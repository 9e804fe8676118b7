//! Where an `llm-call` spends its time waiting, for the benchmarks: on the
//! provider (the gateways' definition of a host's overhead is a call's
//! total time minus this), on budget admission, and on the ledger's
//! durable commit of its usage record.
//!
//! [`measure`] runs a future with a task-local set of clocks; every
//! `llm-call` made inside it (directly, or by a cage run inside it) adds to
//! them. Outside [`measure`] the clocks are absent and recording costs one
//! failed task-local lookup.

use std::cell::Cell;
use std::future::Future;
use std::time::Duration;

/// Time spent waiting, summed over the calls made inside [`measure`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Waits {
    /// In provider exchanges: from building the request to parsing the
    /// reply.
    pub provider: Duration,
    /// In budget and rate-limit admission (a read and a reservation in the
    /// database).
    pub admission: Duration,
    /// Queueing the usage and audit records for the writer (their commit
    /// and sync are not waited for here).
    pub ledger: Duration,
}

tokio::task_local! {
    static WAITS: Cell<Waits>;
}

/// Runs `work`, returning its output and the time its `llm-call`s spent
/// waiting.
pub async fn measure<F: Future>(work: F) -> (F::Output, Waits) {
    WAITS
        .scope(Cell::new(Waits::default()), async {
            let output = work.await;
            (output, WAITS.with(Cell::get))
        })
        .await
}

fn add(f: impl FnOnce(&mut Waits)) {
    let _ = WAITS.try_with(|cell| {
        let mut waits = cell.get();
        f(&mut waits);
        cell.set(waits);
    });
}

/// Adds one provider exchange to the enclosing [`measure`].
pub(crate) fn provider(wait: Duration) {
    add(|w| w.provider += wait);
}

/// Adds one admission to the enclosing [`measure`].
pub(crate) fn admission(wait: Duration) {
    add(|w| w.admission += wait);
}

/// Adds one ledger commit to the enclosing [`measure`].
pub(crate) fn ledger(wait: Duration) {
    add(|w| w.ledger += wait);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_add_up_inside_measure_only() {
        provider(Duration::from_millis(5));
        let ((), waits) = measure(async {
            provider(Duration::from_micros(30));
            tokio::task::yield_now().await;
            provider(Duration::from_micros(12));
            ledger(Duration::from_micros(7));
        })
        .await;
        assert_eq!(waits.provider, Duration::from_micros(42));
        assert_eq!(waits.ledger, Duration::from_micros(7));
        assert_eq!(waits.admission, Duration::ZERO);
    }
}
