//! oci-userns-starter: not yet implemented beyond its command line.

use common::cli::Tool;

const TOOL: Tool = Tool {
    name: "oci-userns-starter",
    help: "Usage: oci-userns-starter [OPTIONS]\n\nSee oci-userns-starter(1).\n",
};

fn main() {
    TOOL.main(|args| {
        args.positionals()?;
        anyhow::bail!("not implemented yet")
    })
}
