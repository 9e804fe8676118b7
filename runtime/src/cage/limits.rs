//! Resource limits of one run, counted across every memory and table of
//! the component (a component can hold many core instances, each with its
//! own linear memory; a per-memory cap would multiply).

use wasmtime::ResourceLimiter;

/// Core instances, memories and tables a run may create. The example claws
/// use fewer than ten of each.
const MAX_ITEMS: usize = 100;

/// Table elements a run may grow its tables to, in total.
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Counts what a run has allocated and refuses growth past its limits.
#[derive(Debug)]
pub(crate) struct RunLimiter {
    memory_limit: usize,
    memory_used: usize,
    table_used: usize,
}

impl RunLimiter {
    pub(crate) fn new(memory_limit: usize) -> Self {
        Self {
            memory_limit,
            memory_used: 0,
            table_used: 0,
        }
    }
}

/// Adds a growth from `current` to `desired` to `used` if the total stays
/// within `limit`; says whether it did.
fn grow(used: &mut usize, limit: usize, current: usize, desired: usize) -> bool {
    let total = used.saturating_add(desired.saturating_sub(current));
    if total > limit {
        return false;
    }
    *used = total;
    true
}

impl ResourceLimiter for RunLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(grow(
            &mut self.memory_used,
            self.memory_limit,
            current,
            desired,
        ))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(grow(
            &mut self.table_used,
            MAX_TABLE_ELEMENTS,
            current,
            desired,
        ))
    }

    fn instances(&self) -> usize {
        MAX_ITEMS
    }

    fn tables(&self) -> usize {
        MAX_ITEMS
    }

    fn memories(&self) -> usize {
        MAX_ITEMS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_counted_across_memories() {
        let mut limiter = RunLimiter::new(100);
        assert!(limiter.memory_growing(0, 60, None).expect("ok"));
        assert!(
            !limiter.memory_growing(0, 60, None).expect("ok"),
            "a second memory counts too"
        );
        assert!(limiter.memory_growing(60, 100, None).expect("ok"));
        assert!(!limiter.memory_growing(100, 101, None).expect("ok"));
    }
}
