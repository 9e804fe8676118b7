//! The limits of one run, what a claw may override, and the
//! [`ResourceLimiter`] that counts every memory, table and instance of the
//! component together (a component can hold many core instances, each with
//! its own linear memory; a per-memory cap would multiply).
//!
//! Every limit has a host default ([`CageLimits::default`]) and may be set
//! per claw ([`LimitOverrides`], stored in the database and changed with
//! `clawrun claws limits`). Overrides are bounded by the ceilings below,
//! which size the engine's pooling allocator: a claw cannot be given more
//! than a pool slot holds.

use std::fmt;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use wasmtime::ResourceLimiter;

/// Highest memory limit a claw may be given, in MiB: the size of one
/// linear memory slot of the pooling allocator.
pub const MAX_MEMORY_MIB: u64 = 1024;

/// Highest number of table elements a claw may be given: the size of one
/// table slot of the pooling allocator.
pub const MAX_TABLE_ELEMENTS: u64 = 100_000;

/// Highest number of core instances a claw may be given: the pooling
/// allocator's limit per component.
pub const MAX_INSTANCES: u64 = 100;

/// Linear memories, and tables, one run may create. Rust claws built with
/// claw-sdk use one memory and two tables.
pub const MAX_MEMORIES: usize = 16;

/// Highest deadline a claw may be given: one day.
pub const MAX_DEADLINE_MS: u64 = 24 * 60 * 60 * 1000;

/// Highest value size a claw may be given, in KiB (64 MiB); values pass
/// through host memory whole.
pub const MAX_VALUE_KIB: u64 = 64 * 1024;

/// Highest number of `llm-call`s per run a claw may be given.
pub const MAX_LLM_CALLS: u64 = 100_000;

/// Wasm stack a run may use (Wasmtime's `max_wasm_stack`); not settable.
pub const WASM_STACK_BYTES: usize = 512 * 1024;

/// The limits applied to one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CageLimits {
    /// Wall-clock time a run may take, host calls included.
    pub run_deadline: Duration,
    /// Fuel a run may burn: Wasmtime charges about one unit per Wasm
    /// instruction, so this bounds CPU time independently of how busy the
    /// host is.
    pub fuel: u64,
    /// Linear memory a run may grow to, in bytes, summed over every memory
    /// of the component.
    pub memory_bytes: usize,
    /// Table elements a run may grow its tables to, summed over every table.
    pub table_elements: usize,
    /// Core instances a run may create.
    pub instances: usize,
    /// `llm-call`s one run may make; the next one ends the run, so a claw
    /// stuck in a loop cannot spend its organisation's budget unattended.
    pub llm_calls: u32,
    /// Largest value that may cross the boundary, in bytes: the run's
    /// input, output and conversation id, each text of an `llm-call`
    /// request, and the whole request.
    pub max_value_bytes: usize,
}

impl Default for CageLimits {
    fn default() -> Self {
        Self {
            run_deadline: Duration::from_secs(300),
            // About a second of a tight loop on the development machine, and
            // far more than an agent spends between model calls (`hello`
            // uses about 4,000, `tool-agent` about 45,000).
            fuel: 20_000_000_000,
            memory_bytes: 256 * 1024 * 1024,
            table_elements: 10_000,
            instances: 50,
            llm_calls: 500,
            max_value_bytes: 1024 * 1024,
        }
    }
}

/// A claw's own limits; `None` keeps the host default.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LimitOverrides {
    /// Run deadline, in milliseconds.
    pub deadline_ms: Option<u64>,
    /// Fuel per run.
    pub fuel: Option<u64>,
    /// Memory, in MiB.
    pub memory_mib: Option<u64>,
    /// Table elements.
    pub table_elements: Option<u64>,
    /// Core instances.
    pub instances: Option<u64>,
    /// `llm-call`s per run.
    pub llm_calls: Option<u64>,
    /// Largest value crossing the boundary, in KiB.
    pub max_value_kib: Option<u64>,
}

impl LimitOverrides {
    /// Checks every value given against the host's ceilings.
    ///
    /// # Errors
    ///
    /// A message naming the flag and its allowed range.
    pub fn check(&self) -> Result<(), String> {
        let ranges = [
            ("--deadline-ms", self.deadline_ms, MAX_DEADLINE_MS, ""),
            ("--fuel", self.fuel, u64::MAX >> 1, ""),
            (
                "--memory-mib",
                self.memory_mib,
                MAX_MEMORY_MIB,
                ", the size of the host's memory slots",
            ),
            (
                "--table-elements",
                self.table_elements,
                MAX_TABLE_ELEMENTS,
                ", the size of the host's table slots",
            ),
            (
                "--instances",
                self.instances,
                MAX_INSTANCES,
                ", what the host's instance pool holds per claw",
            ),
            ("--llm-calls", self.llm_calls, MAX_LLM_CALLS, ""),
            ("--max-value-kib", self.max_value_kib, MAX_VALUE_KIB, ""),
        ];
        for (flag, value, max, why) in ranges {
            if let Some(v) = value
                && (v == 0 || v > max)
            {
                return Err(format!("{flag} must be between 1 and {max}{why}; got {v}"));
            }
        }
        Ok(())
    }

    /// `self` with every value `other` gives replacing its own.
    pub fn merged(&self, other: &LimitOverrides) -> LimitOverrides {
        LimitOverrides {
            deadline_ms: other.deadline_ms.or(self.deadline_ms),
            fuel: other.fuel.or(self.fuel),
            memory_mib: other.memory_mib.or(self.memory_mib),
            table_elements: other.table_elements.or(self.table_elements),
            instances: other.instances.or(self.instances),
            llm_calls: other.llm_calls.or(self.llm_calls),
            max_value_kib: other.max_value_kib.or(self.max_value_kib),
        }
    }

    /// Whether no limit is overridden.
    pub fn is_empty(&self) -> bool {
        *self == LimitOverrides::default()
    }

    /// The limits of a run of this claw: `defaults` with the overrides
    /// applied. Values are clamped to the ceilings, for rows written by
    /// hand.
    pub fn apply(&self, defaults: &CageLimits) -> CageLimits {
        let clamp = |v: u64, max: u64| usize::try_from(v.min(max)).unwrap_or(usize::MAX);
        CageLimits {
            run_deadline: self.deadline_ms.map_or(defaults.run_deadline, |ms| {
                Duration::from_millis(ms.min(MAX_DEADLINE_MS))
            }),
            fuel: self.fuel.unwrap_or(defaults.fuel),
            memory_bytes: self
                .memory_mib
                .map_or(defaults.memory_bytes, |m| clamp(m, MAX_MEMORY_MIB) << 20),
            table_elements: self
                .table_elements
                .map_or(defaults.table_elements, |t| clamp(t, MAX_TABLE_ELEMENTS)),
            instances: self
                .instances
                .map_or(defaults.instances, |i| clamp(i, MAX_INSTANCES)),
            llm_calls: self.llm_calls.map_or(defaults.llm_calls, |c| {
                u32::try_from(c.min(MAX_LLM_CALLS)).unwrap_or(u32::MAX)
            }),
            max_value_bytes: self
                .max_value_kib
                .map_or(defaults.max_value_bytes, |k| clamp(k, MAX_VALUE_KIB) << 10),
        }
    }
}

/// A limit a run hit. Its message names the limit and the `clawrun claws
/// limits` flag that raises it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitHit {
    /// Out of fuel.
    #[error("used up its CPU fuel limit ({0} units)")]
    Fuel(u64),
    /// Past the deadline.
    #[error("ran longer than its deadline of {0:?}")]
    Deadline(Duration),
    /// Memory growth refused.
    #[error("reached its memory limit of {} MiB (linear memory could not grow)", .0 >> 20)]
    Memory(usize),
    /// Memory growth refused because every claw of this host together
    /// holds the host's guest-memory budget.
    #[error(
        "could not grow its memory: this host's claws together hold its guest-memory budget of \
         {} MiB",
        .0 >> 20
    )]
    HostMemory(usize),
    /// Table growth refused.
    #[error("reached its limit of {0} table elements")]
    Tables(usize),
    /// Too many core instances.
    #[error("needs more core instances than its limit of {0}")]
    Instances(usize),
    /// Too many `llm-call`s.
    #[error("passed its limit of {0} llm-calls per run")]
    LlmCalls(u32),
    /// Wasm stack exhausted.
    #[error("overflowed its Wasm stack of {} KiB (a fixed limit)", WASM_STACK_BYTES >> 10)]
    Stack,
    /// A value too large to cross the boundary.
    #[error(
        "exceeded its value size limit: {what} is {size} bytes, over the limit of {limit} bytes \
         per value"
    )]
    Value {
        /// Which value (`its input`, `its output`, …).
        what: String,
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

impl LimitHit {
    /// The `clawrun claws limits` flag that raises this limit, if any.
    pub fn flag(&self) -> Option<&'static str> {
        Some(match self {
            LimitHit::Fuel(_) => "--fuel",
            LimitHit::Deadline(_) => "--deadline-ms",
            LimitHit::Memory(_) => "--memory-mib",
            LimitHit::Tables(_) => "--table-elements",
            LimitHit::Instances(_) => "--instances",
            LimitHit::LlmCalls(_) => "--llm-calls",
            LimitHit::Value { .. } => "--max-value-kib",
            LimitHit::Stack | LimitHit::HostMemory(_) => return None,
        })
    }

    /// How to raise the limit for the claw `claw`, as a sentence.
    pub fn remedy(&self, claw: &str) -> String {
        match (self, self.flag()) {
            (_, Some(flag)) => format!("raise it with `clawrun claws limits {claw} {flag} N`"),
            (LimitHit::HostMemory(_), None) => "try again when other runs have ended; the \
                operator sets the budget with CLAWRUN_HOST_MEMORY_MIB"
                .into(),
            (_, None) => "the claw must recurse less deeply".into(),
        }
    }
}

/// Checks the size of one value crossing the boundary.
///
/// # Errors
///
/// [`LimitHit::Value`] naming `what`.
pub fn check_value(what: impl fmt::Display, size: usize, limit: usize) -> Result<(), LimitHit> {
    if size > limit {
        return Err(LimitHit::Value {
            what: what.to_string(),
            size,
            limit,
        });
    }
    Ok(())
}

/// Counts what a run has allocated and refuses growth past its limits,
/// remembering what it refused so a trap that follows can be explained.
#[derive(Debug)]
pub(crate) struct RunLimiter {
    memory_limit: usize,
    memory_used: usize,
    table_limit: usize,
    table_used: usize,
    instances: usize,
    /// The limit that refused a growth, if one did.
    pub(crate) refused: Option<LimitHit>,
}

impl RunLimiter {
    pub(crate) fn new(limits: &CageLimits) -> Self {
        Self {
            memory_limit: limits.memory_bytes,
            memory_used: 0,
            table_limit: limits.table_elements,
            table_used: 0,
            instances: limits.instances,
            refused: None,
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

/// Linear memory held by every run of this process together.
static HOST_MEMORY_USED: AtomicUsize = AtomicUsize::new(0);

/// The most linear memory every run of this process may hold together:
/// `CLAWRUN_HOST_MEMORY_MIB`, or half of the machine's memory. Each run has
/// its own limit too; this one keeps many runs, of one tenant or several,
/// from taking the machine's memory together.
pub fn host_memory_budget() -> usize {
    static BUDGET: OnceLock<usize> = OnceLock::new();
    *BUDGET.get_or_init(|| {
        if let Some(mib) = std::env::var("CLAWRUN_HOST_MEMORY_MIB")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|&mib| mib > 0)
        {
            return mib.saturating_mul(1 << 20);
        }
        let total = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
            })
            .map_or(8 << 30, |kib| kib.saturating_mul(1024));
        total / 2
    })
}

/// Takes `bytes` from the host's guest-memory budget, if it has them.
fn reserve_host_memory(bytes: usize) -> bool {
    reserve_within(&HOST_MEMORY_USED, host_memory_budget(), bytes)
}

/// Adds `bytes` to `used` if the total stays within `budget`, atomically.
fn reserve_within(used: &AtomicUsize, budget: usize, bytes: usize) -> bool {
    used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
        now.checked_add(bytes).filter(|&total| total <= budget)
    })
    .is_ok()
}

impl Drop for RunLimiter {
    fn drop(&mut self) {
        HOST_MEMORY_USED.fetch_sub(self.memory_used, Ordering::AcqRel);
    }
}

impl ResourceLimiter for RunLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let before = self.memory_used;
        if !grow(&mut self.memory_used, self.memory_limit, current, desired) {
            self.refused = Some(LimitHit::Memory(self.memory_limit));
            return Ok(false);
        }
        if !reserve_host_memory(self.memory_used - before) {
            self.memory_used = before;
            self.refused = Some(LimitHit::HostMemory(host_memory_budget()));
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = grow(&mut self.table_used, self.table_limit, current, desired);
        if !ok {
            self.refused = Some(LimitHit::Tables(self.table_limit));
        }
        Ok(ok)
    }

    fn instances(&self) -> usize {
        self.instances
    }

    fn tables(&self) -> usize {
        MAX_MEMORIES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(memory: usize, tables: usize) -> RunLimiter {
        RunLimiter::new(&CageLimits {
            memory_bytes: memory,
            table_elements: tables,
            ..CageLimits::default()
        })
    }

    #[test]
    fn the_host_budget_is_shared_and_never_overdrawn() {
        let used = AtomicUsize::new(0);
        assert!(reserve_within(&used, 100, 60));
        assert!(
            !reserve_within(&used, 100, 60),
            "a second run's growth counts too"
        );
        assert_eq!(used.load(Ordering::Acquire), 60);
        assert!(reserve_within(&used, 100, 40));
        assert!(!reserve_within(&used, 100, 1));
        used.fetch_sub(60, Ordering::AcqRel);
        assert!(
            reserve_within(&used, 100, 60),
            "memory given back is available again"
        );
    }

    #[test]
    fn memory_is_counted_across_memories() {
        let mut limiter = limiter(100, 10);
        assert!(limiter.memory_growing(0, 60, None).expect("ok"));
        assert!(
            !limiter.memory_growing(0, 60, None).expect("ok"),
            "a second memory counts too"
        );
        assert_eq!(limiter.refused, Some(LimitHit::Memory(100)));
        assert!(limiter.memory_growing(60, 100, None).expect("ok"));
        assert!(!limiter.memory_growing(100, 101, None).expect("ok"));
    }

    #[test]
    fn table_elements_are_counted_across_tables() {
        let mut limiter = limiter(100, 10);
        assert!(limiter.table_growing(0, 6, None).expect("ok"));
        assert!(limiter.refused.is_none());
        assert!(!limiter.table_growing(0, 6, None).expect("ok"));
        assert_eq!(limiter.refused, Some(LimitHit::Tables(10)));
        assert!(limiter.table_growing(0, 4, None).expect("ok"));
    }

    #[test]
    fn overrides_apply_over_defaults_and_are_bounded() {
        let defaults = CageLimits::default();
        let own = LimitOverrides {
            fuel: Some(1_000),
            memory_mib: Some(64),
            llm_calls: Some(20),
            ..LimitOverrides::default()
        };
        let limits = own.apply(&defaults);
        assert_eq!(limits.fuel, 1_000);
        assert_eq!(limits.memory_bytes, 64 << 20);
        assert_eq!(limits.llm_calls, 20);
        assert_eq!(limits.run_deadline, defaults.run_deadline);
        assert!(own.check().is_ok());

        let too_much = LimitOverrides {
            memory_mib: Some(MAX_MEMORY_MIB + 1),
            ..LimitOverrides::default()
        };
        let err = too_much.check().expect_err("over the pool slot");
        assert!(
            err.contains("--memory-mib must be between 1 and 1024"),
            "{err}"
        );
        assert_eq!(too_much.apply(&defaults).memory_bytes, 1024 << 20);
        let zero = LimitOverrides {
            llm_calls: Some(0),
            ..LimitOverrides::default()
        };
        assert!(zero.check().is_err());
        assert_eq!(
            own.merged(&LimitOverrides {
                fuel: Some(5),
                ..LimitOverrides::default()
            })
            .fuel,
            Some(5)
        );
    }

    #[test]
    fn limit_messages_name_the_flag_that_raises_them() {
        let hit = LimitHit::Fuel(1000);
        assert_eq!(hit.to_string(), "used up its CPU fuel limit (1000 units)");
        assert_eq!(
            hit.remedy("loop"),
            "raise it with `clawrun claws limits loop --fuel N`"
        );
        let value = check_value("its output", 11, 10).expect_err("too large");
        assert_eq!(
            value.to_string(),
            "exceeded its value size limit: its output is 11 bytes, over the limit of 10 bytes \
             per value"
        );
        assert!(check_value("x", 10, 10).is_ok());
    }
}
