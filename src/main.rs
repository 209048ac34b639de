//! The `turbomon` command line.

fn main() {}
