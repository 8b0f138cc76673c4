//! The one way the admin tool works through many clinics: at most `jobs` at a
//! time, each on a task of its own, a progress bar advanced as each finishes (its
//! message counts the failures so far), every outcome handed back with the item it
//! belongs to, in the order they finished. A task that panics is an error of its
//! item, never a lost one.

use indicatif::{ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::future::Future;
use tokio::task::JoinSet;

/// A progress bar labelled `prefix`, or a hidden one when `enabled` is false.
pub fn progress_bar(enabled: bool, prefix: &str) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    if let Ok(style) =
        ProgressStyle::with_template("{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}")
    {
        bar.set_style(style);
    }
    bar.set_prefix(prefix.to_owned());
    bar
}

/// Runs `work` for every item, at most `jobs` (at least 1) at once, and returns
/// each item with its outcome in the order they finished.
pub async fn run_bounded<I, T, F, Fut>(
    items: Vec<I>,
    jobs: usize,
    bar: &ProgressBar,
    work: F,
) -> Vec<(I, anyhow::Result<T>)>
where
    I: Clone + Send + 'static,
    T: Send + 'static,
    F: Fn(I) -> Fut,
    Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
{
    let jobs = jobs.max(1);
    bar.set_length(items.len() as u64);
    let mut outcomes = Vec::with_capacity(items.len());
    let mut failed = 0usize;
    let mut running = HashMap::new();
    let mut tasks = JoinSet::new();
    let mut queue = items.into_iter();
    loop {
        while tasks.len() < jobs {
            let Some(item) = queue.next() else { break };
            let handle = tasks.spawn(work(item.clone()));
            running.insert(handle.id(), item);
        }
        let Some(joined) = tasks.join_next_with_id().await else {
            break;
        };
        let (id, result) = match joined {
            Ok((id, result)) => (id, result),
            Err(e) => (e.id(), Err(anyhow::anyhow!("the task failed: {e}"))),
        };
        let Some(item) = running.remove(&id) else {
            continue;
        };
        if result.is_err() {
            failed += 1;
            bar.set_message(format!("{failed} failed"));
        }
        bar.inc(1);
        outcomes.push((item, result));
    }
    outcomes
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn never_more_than_jobs_at_once_and_every_item_comes_back() {
        let now = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let bar = ProgressBar::hidden();
        let out = run_bounded((0..20).collect(), 3, &bar, |i: u32| {
            let (now, peak) = (now.clone(), peak.clone());
            async move {
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(u64::from(i % 4))).await;
                now.fetch_sub(1, Ordering::SeqCst);
                if i.is_multiple_of(5) {
                    anyhow::bail!("clinic {i} refused");
                }
                Ok(i * 2)
            }
        })
        .await;
        assert_eq!(peak.load(Ordering::SeqCst), 3);
        let mut items: Vec<u32> = out.iter().map(|(i, _)| *i).collect();
        items.sort_unstable();
        assert_eq!(items, (0..20).collect::<Vec<_>>());
        for (i, r) in &out {
            match r {
                Ok(v) => assert_eq!(*v, i * 2),
                Err(e) => assert_eq!(e.to_string(), format!("clinic {i} refused")),
            }
        }
        assert_eq!(bar.position(), 20);
        assert_eq!(bar.message(), "4 failed");
    }

    #[tokio::test]
    async fn a_panicking_task_is_its_items_error() {
        let bar = ProgressBar::hidden();
        let out = run_bounded(vec![1, 2], 0, &bar, |i: i32| async move {
            assert!(i != 2, "boom");
            Ok(i)
        })
        .await;
        assert_eq!(out.len(), 2);
        let failed: Vec<i32> = out
            .iter()
            .filter(|(_, r)| r.is_err())
            .map(|(i, _)| *i)
            .collect();
        assert_eq!(failed, [2]);
    }
}
