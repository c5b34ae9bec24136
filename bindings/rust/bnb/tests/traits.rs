//! The crate's optimizer facts (`has_state2`, `state1_parts`) equal the library's trait table,
//! src/common/optim_traits.h, row by row.
use bnb::Optimizer;

#[test]
fn optimizer_facts_equal_the_c_trait_table() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../src/common/optim_traits.h");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let all = [
        Optimizer::Adam,
        Optimizer::Momentum,
        Optimizer::RmsProp,
        Optimizer::Lion,
        Optimizer::Adagrad,
        Optimizer::AdEMAMix,
        Optimizer::Lamb,
        Optimizer::Lars,
    ];
    // Rows `X(BNB_OPT_..., "name", BNB_OPT_..., states, state1_copies, ...)`, in enum order.
    let rows: Vec<Vec<String>> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("X(BNB_OPT_"))
        .map(|l| l.split(',').map(|f| f.trim().to_string()).collect())
        .collect();
    assert_eq!(rows.len(), all.len(), "rows of BNB_OPTIMIZERS");
    for (row, opt) in rows.iter().zip(all) {
        assert_eq!(row[3] == "2", opt.has_state2(), "{opt:?}: states");
        assert_eq!(row[4].parse::<usize>().unwrap(), opt.state1_parts(), "{opt:?}: state1_copies");
    }
}
