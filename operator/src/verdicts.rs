//! Review verdicts (TokenReview, SubjectAccessReview) remembered for a while, by a hash of what
//! was reviewed: the agent's callers and the secure metrics endpoint's.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries kept at most; past it the expired ones go, and if none has, all.
const LIMIT: usize = 1024;

/// Verdicts by key, each with its expiry.
pub(crate) struct Verdicts<K, V>(Mutex<HashMap<K, (Instant, V)>>);

impl<K: Hash + Eq, V: Clone> Verdicts<K, V> {
    pub(crate) fn new() -> Self {
        Verdicts(Mutex::new(HashMap::new()))
    }

    pub(crate) fn get(&self, key: &K) -> Option<V> {
        let cache = self.0.lock().ok()?;
        let (expires, value) = cache.get(key)?;
        (Instant::now() < *expires).then(|| value.clone())
    }

    pub(crate) fn put(&self, key: K, ttl: Duration, value: V) {
        let Ok(mut cache) = self.0.lock() else {
            return;
        };
        let now = Instant::now();
        if cache.len() >= LIMIT {
            cache.retain(|_, (expires, _)| *expires > now);
            if cache.len() >= LIMIT {
                cache.clear();
            }
        }
        cache.insert(key, (now + ttl, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire() {
        let cache = Verdicts::new();
        cache.put("a", Duration::from_secs(60), 1);
        cache.put("b", Duration::ZERO, 2);
        assert_eq!(cache.get(&"a"), Some(1));
        assert_eq!(cache.get(&"b"), None);
    }

    #[test]
    fn the_map_stays_bounded() {
        let cache = Verdicts::new();
        for i in 0..(LIMIT + 10) {
            cache.put(i, Duration::from_secs(60), i);
        }
        let len = cache.0.lock().map(|c| c.len()).unwrap_or(0);
        assert!(len <= LIMIT, "{len}");
        assert_eq!(cache.get(&(LIMIT + 9)), Some(LIMIT + 9));
    }
}
