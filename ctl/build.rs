// The same build script serves every binary of the workspace.
include!("../build-support/git_rev.rs");
