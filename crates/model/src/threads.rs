//! Splitting independent work across threads. Each task is computed by the
//! same code whatever the split, so results do not depend on thread count.

/// Runs `f(i, chunk)` for every `chunk_len`-sized chunk of `out`, chunks
/// split across `threads` in contiguous groups.
pub fn for_each_chunk_mut(
    out: &mut [f32],
    chunk_len: usize,
    threads: usize,
    f: impl Fn(usize, &mut [f32]) + Sync,
) {
    let n = out.len() / chunk_len.max(1);
    let threads = threads.clamp(1, n.max(1));
    let per = n.div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let mut rest = out;
        let mut first = 0;
        let f = &f;
        while first < n {
            let take = per.min(n - first);
            let (group, tail) = rest.split_at_mut(take * chunk_len);
            rest = tail;
            let start = first;
            let mut work = move || {
                for (j, c) in group.chunks_mut(chunk_len).enumerate() {
                    f(start + j, c);
                }
            };
            first += take;
            if first < n {
                s.spawn(work);
            } else {
                work();
            }
        }
    });
}
