//! CPU and wall-time accounting for one runtime, enforced through QuickJS's interrupt handler.
//!
//! The sandbox runs JavaScript in short synchronous steps (evaluate, call, run jobs). Each step
//! is armed with a deadline: the earlier of "CPU budget left" and "wall deadline". QuickJS
//! polls the handler every few thousand instructions, so a busy loop ends shortly after the
//! deadline. Time spent awaiting host I/O is not counted as CPU; the wall limit covers it.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::api::{InvokeError, Limits};

/// Which limit stopped the code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Limit {
    Cpu,
    Wall,
}

impl Limit {
    /// The error an invocation reports for this limit.
    pub(crate) fn error(self, limits: &Limits) -> InvokeError {
        match self {
            Limit::Cpu => InvokeError::CpuLimit(limits.cpu_ms),
            Limit::Wall => InvokeError::WallLimit(limits.wall_ms),
        }
    }
}

/// Shared between the runtime's interrupt handler and the code that runs steps. A runtime
/// may be built on one thread and run on another, never on two at once, so the lock is
/// never contended.
#[derive(Debug, Default)]
pub(crate) struct Meter {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    armed: Option<(Instant, Limit)>,
    tripped: Option<Limit>,
}

impl Meter {
    /// The interrupt handler to install on the runtime.
    pub(crate) fn handler(self: &Arc<Self>) -> Box<dyn FnMut() -> bool + Send> {
        let meter = Arc::clone(self);
        Box::new(move || meter.should_interrupt())
    }

    /// The limit that stopped the code, once one has. Sticky: the runtime is then discarded.
    pub(crate) fn tripped(&self) -> Option<Limit> {
        self.state().tripped
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn should_interrupt(&self) -> bool {
        let mut state = self.state();
        if state.tripped.is_some() {
            return true;
        }
        match state.armed {
            Some((deadline, limit)) if Instant::now() >= deadline => {
                state.tripped = Some(limit);
                true
            }
            _ => false,
        }
    }

    /// Runs one synchronous step of JavaScript against the invocation's budget.
    pub(crate) fn run<R>(&self, budget: &mut Budget, step: impl FnOnce() -> R) -> R {
        let start = Instant::now();
        let cpu_deadline = start + budget.cpu_left;
        let armed = if cpu_deadline <= budget.wall_deadline {
            (cpu_deadline, Limit::Cpu)
        } else {
            (budget.wall_deadline, Limit::Wall)
        };
        self.state().armed = Some(armed);

        let out = step();

        let mut state = self.state();
        state.armed = None;
        budget.cpu_left = budget.cpu_left.saturating_sub(start.elapsed());
        if budget.cpu_left.is_zero() && state.tripped.is_none() {
            state.tripped = Some(Limit::Cpu);
        }
        out
    }
}

/// What one invocation may still spend.
#[derive(Debug)]
pub(crate) struct Budget {
    cpu_left: Duration,
    wall_deadline: Instant,
}

impl Budget {
    /// A fresh budget starting now.
    pub(crate) fn new(limits: &Limits) -> Self {
        Self {
            cpu_left: Duration::from_millis(limits.cpu_ms),
            wall_deadline: Instant::now() + Duration::from_millis(limits.wall_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(cpu_ms: u64, wall_ms: u64) -> Limits {
        Limits {
            memory_bytes: 1 << 20,
            cpu_ms,
            wall_ms,
        }
    }

    #[test]
    fn interrupts_after_the_cpu_budget() {
        let meter = Arc::new(Meter::default());
        let mut interrupt = meter.handler();
        let mut budget = Budget::new(&limits(5, 10_000));

        let fired = meter.run(&mut budget, || {
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(1) {
                if interrupt() {
                    return true;
                }
            }
            false
        });

        assert!(fired);
        assert_eq!(meter.tripped(), Some(Limit::Cpu));
    }

    #[test]
    fn budget_accumulates_across_steps() {
        let meter = Meter::default();
        let mut budget = Budget::new(&limits(20, 10_000));

        meter.run(&mut budget, || {
            std::thread::sleep(Duration::from_millis(12))
        });
        assert_eq!(meter.tripped(), None);
        meter.run(&mut budget, || {
            std::thread::sleep(Duration::from_millis(12))
        });

        assert_eq!(meter.tripped(), Some(Limit::Cpu));
    }

    #[test]
    fn wall_deadline_wins_when_earlier() {
        let meter = Arc::new(Meter::default());
        let interrupt = meter.handler();
        let mut budget = Budget::new(&limits(10_000, 5));

        std::thread::sleep(Duration::from_millis(6));
        let fired = meter.run(&mut budget, interrupt);

        assert!(fired);
        assert_eq!(meter.tripped(), Some(Limit::Wall));
    }
}
