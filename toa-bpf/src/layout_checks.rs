//! The build fails where the loader's view of a layout it shares with the
//! programs differs from bpf/toa.bpf.c, the one source of them: struct
//! fields, counter order, settings flags, map names and sizes. build.rs reads
//! the compiled object's BTF and writes one assertion for each
//! (build/layout_checks.rs); they are evaluated here, at compile time.

/// The size of the field `field` selects, in a const.
const fn field_size<T, F>(_field: fn(&T) -> &F) -> usize {
    core::mem::size_of::<F>()
}

/// `a == b`, in a const.
const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Whether `names[at]` is `name`, in a const.
const fn named_at(names: &[&str], at: usize, name: &str) -> bool {
    at < names.len() && same(names[at], name)
}

/// Whether `name` is in `names`, in a const.
const fn listed(names: &[&str], name: &str) -> bool {
    let mut i = 0;
    while i < names.len() {
        if same(names[i], name) {
            return true;
        }
        i += 1;
    }
    false
}

include!(concat!(env!("OUT_DIR"), "/layout_checks.rs"));
