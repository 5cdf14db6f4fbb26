// Same build script as idprovd: the git revision for build_info.
include!("../../build-support/git_rev.rs");
