//! alloy `sol!` bindings generated from the committed artifacts in `contracts/artifacts/`.
//!
//! ABI and creation bytecode are read at compile time from the JSON files that
//! `scripts/compile.sh` writes and `scripts/compile.sh --check` keeps in step with the sources,
//! so the Rust side can never drift from the deployed code. The generated items carry the
//! Solidity names (`Adjudicator::State`, `Adjudicator::closeCall`, ...); their documentation is
//! the NatSpec of `sol/*.sol`.
#![allow(missing_docs, clippy::too_many_arguments)]

alloy::sol!(
    #[sol(rpc, all_derives)]
    Adjudicator,
    "artifacts/Adjudicator.json"
);

alloy::sol!(
    #[sol(rpc, all_derives)]
    SecretRegistry,
    "artifacts/SecretRegistry.json"
);

alloy::sol!(
    #[sol(rpc, all_derives)]
    TestToken,
    "artifacts/TestToken.json"
);

alloy::sol! {
    /// The ERC-20 functions the chain client needs from a channel's token.
    #[sol(rpc)]
    interface IERC20 {
        function allowance(address owner, address spender) external view returns (uint256);
        function approve(address spender, uint256 amount) external returns (bool);
        function balanceOf(address owner) external view returns (uint256);
    }
}
