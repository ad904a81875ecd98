//! oci-conmon-create: not yet implemented beyond its command line.

use common::cli::Tool;

const TOOL: Tool = Tool {
    name: "oci-conmon-create",
    help: "Usage: oci-conmon-create [OPTIONS]\n\nSee oci-conmon-create(1).\n",
};

fn main() {
    TOOL.main(|args| {
        args.positionals()?;
        anyhow::bail!("not implemented yet")
    })
}
