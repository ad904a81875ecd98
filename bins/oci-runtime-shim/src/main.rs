//! oci-runtime-shim: not yet implemented beyond its command line.

use common::cli::Tool;

const TOOL: Tool = Tool {
    name: "oci-runtime-shim",
    help: "Usage: oci-runtime-shim [OPTIONS]\n\nSee oci-runtime-shim(1).\n",
};

fn main() {
    TOOL.main(|args| {
        args.positionals()?;
        anyhow::bail!("not implemented yet")
    })
}
