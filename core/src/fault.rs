//! Fault injection for the fault tests: in debug builds only, `CM3_FAULT=<point>@<n>` makes
//! [`point`] panic the `n`-th time (0-based) `point` is passed, so a test can kill a stage
//! exactly where a real crash or bug would. Release builds compile it to nothing.

/// Panic here when `CM3_FAULT` names `name@n` (debug builds only).
#[inline]
pub fn point(name: &str, n: u64) {
    #[cfg(debug_assertions)]
    if let Ok(v) = std::env::var("CM3_FAULT")
        && v.split(',').any(|f| {
            f.split_once('@')
                .is_some_and(|(p, k)| p == name && k.parse() == Ok(n))
        })
    {
        panic!("CM3_FAULT: injected panic at {name}@{n}");
    }
    #[cfg(not(debug_assertions))]
    let _ = (name, n);
}
