//! Readiness flags: each cache or warm-up step registers one, and `/readyz`
//! answers 200 only when every flag is set.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The set of registered readiness flags, shared by the probe handler.
#[derive(Clone, Default)]
pub struct Readiness {
    flags: Arc<Mutex<Vec<Named>>>,
}

type Named = (&'static str, Arc<AtomicBool>);

/// One component's readiness; starts not ready.
#[derive(Clone)]
pub struct ReadyFlag(Arc<AtomicBool>);

impl ReadyFlag {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

impl Readiness {
    /// Registers a component that is not ready until it says so.
    pub fn register(&self, name: &'static str) -> ReadyFlag {
        let flag = Arc::new(AtomicBool::new(false));
        self.flags
            .lock()
            .expect("readiness lock is never held across a panic")
            .push((name, flag.clone()));
        ReadyFlag(flag)
    }

    /// The names of the components that are not ready, in registration order.
    pub fn not_ready(&self) -> Vec<&'static str> {
        self.flags
            .lock()
            .expect("readiness lock is never held across a panic")
            .iter()
            .filter(|(_, f)| !f.load(Ordering::Acquire))
            .map(|(n, _)| *n)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_components_until_ready() {
        let r = Readiness::default();
        let a = r.register("sessions");
        let b = r.register("lobby");
        assert_eq!(r.not_ready(), ["sessions", "lobby"]);
        a.set(true);
        assert_eq!(r.not_ready(), ["lobby"]);
        b.set(true);
        assert!(r.not_ready().is_empty());
        a.set(false);
        assert_eq!(r.not_ready(), ["sessions"]);
    }
}
