//! The time an `llm-call` spends waiting on its provider, for the
//! benchmarks' definition of the host's overhead: a call's total time minus
//! this wait.
//!
//! [`measure`] runs a future with a task-local clock; every `llm-call` made
//! inside it (directly, or by a cage run inside it) adds the time spent in
//! its provider exchange, from the moment the request is built until the
//! reply is parsed. Outside [`measure`] the clock is absent and recording
//! costs one failed task-local lookup.

use std::cell::Cell;
use std::future::Future;
use std::time::Duration;

tokio::task_local! {
    static PROVIDER_WAIT: Cell<Duration>;
}

/// Runs `work`, returning its output and the time its `llm-call`s spent
/// waiting on providers.
pub async fn measure<F: Future>(work: F) -> (F::Output, Duration) {
    PROVIDER_WAIT
        .scope(Cell::new(Duration::ZERO), async {
            let output = work.await;
            (output, PROVIDER_WAIT.with(Cell::get))
        })
        .await
}

/// Adds one provider exchange to the clock of the enclosing [`measure`].
pub(crate) fn record(wait: Duration) {
    let _ = PROVIDER_WAIT.try_with(|clock| clock.set(clock.get() + wait));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_add_up_inside_measure_only() {
        record(Duration::from_millis(5));
        let ((), wait) = measure(async {
            record(Duration::from_micros(30));
            tokio::task::yield_now().await;
            record(Duration::from_micros(12));
        })
        .await;
        assert_eq!(wait, Duration::from_micros(42));
    }
}
