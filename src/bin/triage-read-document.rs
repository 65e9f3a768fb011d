//! `triage-read-document KIND`: the document reader the service starts once per
//! document, under limits it sets itself (see `triage::shell::document_reader`). A
//! binary of its own because it is small: starting the whole service's binary was
//! most of the CPU a backlog with documents cost.

fn main() {
    let status = triage::shell::document_reader::run_with_args(std::env::args().skip(1));
    std::process::exit(status);
}
