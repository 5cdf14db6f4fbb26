// The same build script serves idprovd, idprov-oob and idprov-tui.
include!("../build-support/git_rev.rs");
