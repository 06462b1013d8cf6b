// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @title HostileReceiver (test only)
/// @notice Runtime code the tests install at a participant's address (as an EIP-7702
/// delegation would): on receiving ETH it calls back into a target with a stored payload and
/// records the outcome, or refuses the payment outright.
contract HostileReceiver {
    address public target;
    bytes public payload;
    bool public armed;
    bool public refuse;
    uint256 public attempts;
    bool public lastSucceeded;
    bytes public lastReturn;

    /// @notice Call `target` with `payload` on the next ETH receipt.
    function arm(address target_, bytes calldata payload_) external {
        target = target_;
        payload = payload_;
        armed = true;
    }

    /// @notice Make every ETH receipt revert (or stop doing so).
    function setRefuse(bool refuse_) external {
        refuse = refuse_;
    }

    receive() external payable {
        require(!refuse, "refused");
        if (!armed) return;
        armed = false;
        attempts += 1;
        (bool ok, bytes memory ret) = target.call(payload);
        lastSucceeded = ok;
        lastReturn = ret;
    }
}
