//! oci-unpack: not yet implemented beyond its command line.

use common::cli::Tool;

const TOOL: Tool = Tool {
    name: "oci-unpack",
    help: "Usage: oci-unpack [OPTIONS]\n\nSee oci-unpack(1).\n",
};

fn main() {
    TOOL.main(|args| {
        args.positionals()?;
        anyhow::bail!("not implemented yet")
    })
}
