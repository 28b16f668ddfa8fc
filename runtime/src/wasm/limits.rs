//! What one run of a container may grow, enforced by wasmtime (`ResourceLimiter`) and by the
//! WASI handle table, so that no guest can take memory or file descriptors from the daemon and
//! its other pods.
//!
//! Per run (one store), together for everything the run creates:
//! - **memory**: every linear memory *and* every table counts against `memory_limit` (a table
//!   element counts as [`TABLE_ELEMENT_BYTES`]); a module with eight memories gets the same budget
//!   as one with one memory;
//! - **table elements**: at most [`MAX_TABLE_ELEMENTS`] over all tables (a second bound, so a
//!   huge memory limit does not allow absurd tables);
//! - **instances, tables, memories**: at most [`MAX_INSTANCES`], [`MAX_TABLES`],
//!   [`MAX_MEMORIES`] (a wasip2 component made by Rust has about ten core instances);
//! - **open handles** (sockets, files, streams, pollables; each socket or file is at most one
//!   host fd): `open_files` entries in the WASI resource table.
//!
//! Hitting a bound ends the run with [`LimitReached`] (a trap, never a silent `-1` the guest
//! might spin on), which the supervisor reports as such ("memory limit 16 MiB reached").

/// What a table element is charged against the memory limit (wasmtime stores a pointer per
/// element; funcref tables of some configurations two).
pub(crate) const TABLE_ELEMENT_BYTES: usize = 16;
/// Elements over all tables of one run.
pub(crate) const MAX_TABLE_ELEMENTS: usize = 1 << 20;
pub(crate) const MAX_INSTANCES: usize = 256;
pub(crate) const MAX_TABLES: usize = 256;
pub(crate) const MAX_MEMORIES: usize = 64;

/// A bound a run hit: the run ends with this error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitReached {
    #[error("memory limit {} MiB reached", .0 >> 20)]
    Memory(u64),
    #[error("table limit of {0} elements reached")]
    TableElements(usize),
    #[error("open files limit {0} reached (sockets, files and streams)")]
    OpenFiles(usize),
}

impl LimitReached {
    /// Kubernetes' word for how the container ended.
    pub fn reason(&self) -> &'static str {
        match self {
            LimitReached::Memory(_) => "OOMKilled",
            _ => "LimitReached",
        }
    }
}

/// The limiter of one store: counts what the run holds.
#[derive(Debug)]
pub(crate) struct Limiter {
    memory_limit: u64,
    /// Bytes held by linear memories and tables.
    used: u64,
    table_elements: usize,
    /// The last growth allowed, undone if wasmtime then fails to grow.
    pending: u64,
    /// Where `used` is shown to others (`inspect`).
    gauge: Option<std::sync::Arc<crate::wasm::cpu::Usage>>,
}

impl Limiter {
    pub(crate) fn new(memory_limit: u64) -> Self {
        Limiter {
            memory_limit,
            used: 0,
            table_elements: 0,
            pending: 0,
            gauge: None,
        }
    }

    /// Keeps `usage.memory` equal to what the run holds.
    pub(crate) fn with_gauge(mut self, usage: std::sync::Arc<crate::wasm::cpu::Usage>) -> Self {
        self.gauge = Some(usage);
        self
    }

    fn show(&self) {
        if let Some(g) = &self.gauge {
            g.memory
                .store(self.used, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Bytes of linear memory and tables the run holds now.
    #[cfg(test)]
    fn used(&self) -> u64 {
        self.used
    }

    fn charge(&mut self, bytes: u64) -> wasmtime::Result<()> {
        if self.used.saturating_add(bytes) > self.memory_limit {
            return Err(LimitReached::Memory(self.memory_limit).into());
        }
        self.used += bytes;
        self.pending = bytes;
        self.show();
        Ok(())
    }
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|m| desired > m) {
            return Ok(false); // the module's own maximum: memory.grow returns -1, as the spec says
        }
        self.charge(desired.saturating_sub(current) as u64)?;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.used -= std::mem::take(&mut self.pending);
        self.show();
        Ok(())
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|m| desired > m) {
            return Ok(false);
        }
        let more = desired.saturating_sub(current);
        let bytes = (more as u64).saturating_mul(TABLE_ELEMENT_BYTES as u64);
        if self.used.saturating_add(bytes) <= self.memory_limit
            && self.table_elements.saturating_add(more) > MAX_TABLE_ELEMENTS
        {
            return Err(LimitReached::TableElements(MAX_TABLE_ELEMENTS).into());
        }
        self.charge(bytes)?;
        self.table_elements += more;
        Ok(true)
    }

    fn table_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        let bytes = std::mem::take(&mut self.pending);
        self.used -= bytes;
        self.table_elements -= (bytes / TABLE_ELEMENT_BYTES as u64) as usize;
        Ok(())
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    #[test]
    fn all_memories_and_tables_share_one_budget() {
        let mib = 1 << 20;
        let mut l = Limiter::new(4 * mib as u64);
        assert!(l.memory_growing(0, 2 * mib, None).unwrap());
        assert!(l.memory_growing(0, mib, None).unwrap(), "a second memory");
        let e = l.memory_growing(0, 2 * mib, None).unwrap_err();
        assert_eq!(
            e.downcast_ref::<LimitReached>(),
            Some(&LimitReached::Memory(4 * mib as u64))
        );
        assert_eq!(e.to_string(), "memory limit 4 MiB reached");
        // What is left (1 MiB) is for tables too: 65536 elements of 16 bytes.
        assert!(l.table_growing(0, 65536, None).unwrap());
        assert!(l.table_growing(65536, 65537, None).is_err());
        assert_eq!(l.used(), 4 * mib as u64);
    }

    #[test]
    fn module_maximum_is_a_plain_failure_and_failed_growth_is_refunded() {
        let mut l = Limiter::new(1 << 30);
        assert!(!l.memory_growing(0, 2 << 20, Some(1 << 20)).unwrap());
        assert_eq!(l.used(), 0);
        assert!(l.memory_growing(0, 1 << 20, None).unwrap());
        l.memory_grow_failed(wasmtime::Error::msg("mmap")).unwrap();
        assert_eq!(l.used(), 0);
        assert!(l.table_growing(0, 10, None).unwrap());
        l.table_grow_failed(wasmtime::Error::msg("x")).unwrap();
        assert_eq!((l.used(), l.table_elements), (0, 0));
    }

    #[test]
    fn table_elements_are_capped_whatever_the_memory_limit() {
        let mut l = Limiter::new(u64::MAX);
        assert!(l.table_growing(0, MAX_TABLE_ELEMENTS, None).unwrap());
        let e = l.table_growing(0, 1, None).unwrap_err();
        assert!(e.downcast_ref::<LimitReached>().is_some());
    }
}
