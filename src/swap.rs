//! A value replaced whole on reload: readers take the current one and keep
//! it as long as they need a consistent view (a session keeps its settings
//! for a whole transaction, a delivery its router for one attempt).

use std::sync::{Arc, RwLock};

pub struct Swap<T: ?Sized>(RwLock<Arc<T>>);

impl<T: ?Sized> Swap<T> {
    pub fn new(value: Arc<T>) -> Self {
        Swap(RwLock::new(value))
    }

    /// The current value.
    pub fn load(&self) -> Arc<T> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Puts `value` in place; returns the one it replaces.
    pub fn store(&self, value: Arc<T>) -> Arc<T> {
        let mut cur = self.0.write().unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *cur, value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_keep_what_they_took_and_later_readers_see_the_new_value() {
        let s = Swap::new(Arc::new(1));
        let held = s.load();
        let old = s.store(Arc::new(2));
        assert_eq!((*held, *old, *s.load()), (1, 1, 2));
    }
}
