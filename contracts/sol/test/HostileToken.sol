// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @title HostileToken (test only)
/// @notice An ERC-20 that, once armed, calls back into a target (the adjudicator) from inside
/// `transfer` or `transferFrom` and records whether that nested call succeeded; it can also
/// refuse every transfer to one blocked address (as a token with a blocklist does).
contract HostileToken {
    mapping(address owner => uint256) public balanceOf;
    mapping(address owner => mapping(address spender => uint256)) public allowance;

    address public target;
    bytes public payload;
    bool public armed;
    address public blocked;
    /// Number of nested calls attempted, and the outcome of the last one.
    uint256 public attempts;
    bool public lastSucceeded;
    bytes public lastReturn;

    function mint(address to, uint256 amount) external {
        balanceOf[to] += amount;
    }

    function approve(address spender, uint256 amount) external returns (bool) {
        allowance[msg.sender][spender] = amount;
        return true;
    }

    /// @notice Call `target` with `payload` during the next transfer or transferFrom.
    function arm(address target_, bytes calldata payload_) external {
        target = target_;
        payload = payload_;
        armed = true;
    }

    /// @notice Revert every transfer to `who` (address(0) to stop).
    function setBlocked(address who) external {
        blocked = who;
    }

    function transfer(address to, uint256 amount) external returns (bool) {
        _reenter();
        _move(msg.sender, to, amount);
        return true;
    }

    function transferFrom(address from, address to, uint256 amount) external returns (bool) {
        _reenter();
        allowance[from][msg.sender] -= amount;
        _move(from, to, amount);
        return true;
    }

    function _move(address from, address to, uint256 amount) private {
        require(to != blocked || to == address(0), "blocked");
        balanceOf[from] -= amount;
        balanceOf[to] += amount;
    }

    function _reenter() private {
        if (!armed) return;
        armed = false;
        attempts += 1;
        (bool ok, bytes memory ret) = target.call(payload);
        lastSucceeded = ok;
        lastReturn = ret;
    }
}
