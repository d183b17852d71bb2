//! [`RecentLines`]: the last lines a child process wrote, kept to explain a failure.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// The last `keep` lines, shared between the task that reads a child's output and the code
/// that reports its failure.
#[derive(Debug, Clone)]
pub struct RecentLines {
    keep: usize,
    lines: Arc<Mutex<VecDeque<String>>>,
}

impl RecentLines {
    pub fn new(keep: usize) -> Self {
        RecentLines {
            keep,
            lines: Arc::default(),
        }
    }

    pub fn push(&self, line: &str) {
        let mut q = self
            .lines
            .lock()
            .expect("the line buffer's lock is never poisoned");
        if q.len() == self.keep {
            q.pop_front();
        }
        q.push_back(line.to_owned());
    }

    /// The kept lines, oldest first.
    pub fn lines(&self) -> Vec<String> {
        let q = self
            .lines
            .lock()
            .expect("the line buffer's lock is never poisoned");
        q.iter().cloned().collect()
    }

    /// True when a kept line contains `needle`.
    pub fn mentions(&self, needle: &str) -> bool {
        let q = self
            .lines
            .lock()
            .expect("the line buffer's lock is never poisoned");
        q.iter().any(|l| l.contains(needle))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_last_lines_are_kept() {
        let r = RecentLines::new(2);
        for l in ["a", "b", "c"] {
            r.push(l);
        }
        assert_eq!(r.lines(), ["b", "c"]);
        assert!(r.mentions("c") && !r.mentions("a"));
    }
}
