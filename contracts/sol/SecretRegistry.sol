// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @title SecretRegistry
/// @notice Records when the sha256 preimage of a hashlock was first revealed on chain. The
/// adjudicator (and every hub) reads it to settle HTLC locks: a lock whose preimage was
/// registered at or before the lock's expiry pays its receiver, otherwise its sender.
/// @dev Shared by all channels and all adjudicators on a chain, so one reveal settles a payment
/// along its whole path. Registration is permissionless and idempotent.
contract SecretRegistry {
    /// @notice Block timestamp at which the preimage of `hashlock` was first registered, or 0.
    mapping(bytes32 hashlock => uint256 timestamp) public revealedAt;

    /// @notice A preimage was registered for the first time.
    /// @param hashlock sha256(preimage)
    /// @param preimage the 32-byte secret
    event SecretRevealed(bytes32 indexed hashlock, bytes32 preimage);

    /// @notice Register a preimage; returns false (and changes nothing) if it was already known.
    /// @param preimage the 32-byte secret whose sha256 is the hashlock
    /// @return registered whether this call recorded it
    function registerSecret(bytes32 preimage) external returns (bool registered) {
        return _register(preimage);
    }

    /// @notice Register several preimages in one transaction.
    /// @param preimages the secrets
    /// @return registered how many of them were new
    function registerSecrets(bytes32[] calldata preimages) external returns (uint256 registered) {
        for (uint256 i = 0; i < preimages.length; ++i) {
            if (_register(preimages[i])) {
                ++registered;
            }
        }
    }

    function _register(bytes32 preimage) private returns (bool) {
        bytes32 hashlock = sha256(abi.encode(preimage));
        if (revealedAt[hashlock] != 0) {
            return false;
        }
        revealedAt[hashlock] = block.timestamp;
        emit SecretRevealed(hashlock, preimage);
        return true;
    }
}
