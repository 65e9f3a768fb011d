//! `triage-read-document serve`: the fork server the service keeps, one child per
//! document; `triage-read-document KIND`: one document, where a server fails. Either
//! way the reader sets its limits itself (see `triage::shell::document_reader`). A
//! binary of its own because it is small: starting the whole service's binary was
//! most of the CPU a backlog with documents cost.

fn main() {
    let status = triage::shell::document_reader::run_with_args(std::env::args().skip(1));
    std::process::exit(status);
}
