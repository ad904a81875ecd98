//! oci-fetch: not yet implemented beyond its command line.

use common::cli::Tool;

const TOOL: Tool = Tool {
    name: "oci-fetch",
    help: "Usage: oci-fetch [OPTIONS]\n\nSee oci-fetch(1).\n",
};

fn main() {
    TOOL.main(|args| {
        args.positionals()?;
        anyhow::bail!("not implemented yet")
    })
}
