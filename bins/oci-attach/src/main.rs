//! oci-attach: not yet implemented beyond its command line.

use common::cli::Tool;

const TOOL: Tool = Tool {
    name: "oci-attach",
    help: "Usage: oci-attach [OPTIONS]\n\nSee oci-attach(1).\n",
};

fn main() {
    TOOL.main(|args| {
        args.positionals()?;
        anyhow::bail!("not implemented yet")
    })
}
