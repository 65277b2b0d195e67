//! The `mixtral` command-line tool.

fn main() {}
