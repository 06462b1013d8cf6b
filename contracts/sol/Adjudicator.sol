// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {SecretRegistry} from "./SecretRegistry.sol";

/// @dev The three ERC-20 functions the adjudicator calls.
interface IERC20Minimal {
    function transfer(address to, uint256 amount) external returns (bool);
    function transferFrom(address from, address to, uint256 amount) external returns (bool);
    function balanceOf(address owner) external view returns (uint256);
}

/// @title Adjudicator
/// @notice Holds the deposits of many two-party channels (ETH or one ERC-20 each) and enforces
/// their latest co-signed state: cooperative close, unilateral close with a challenge window,
/// challenge with a higher version, conclude, HTLC locks settled against the SecretRegistry, and
/// guarantees for virtual channels settled by the virtual channel's final state.
/// @dev State format, channel id and EIP-712 hashing: docs/adr/0002. Contract decisions:
/// docs/adr/0010 (storage, payout priority, deferred payouts) and 0011 (guarantees).
/// Storage per channel: one packed slot (holdings, disputed version, window end, concluded flag)
/// and, while a dispute or residual locks/guarantees exist, one fingerprint slot (the EIP-712
/// struct hash of the disputed/concluded state). Every state-changing entry point is
/// non-reentrant and pays out only after all its storage writes (checks-effects-interactions).
contract Adjudicator {
    // ------------------------------------------------------------------------------------------
    // Types
    // ------------------------------------------------------------------------------------------

    /// @notice The fixed parameters of a channel. Chain id and adjudicator are implicit
    /// (block.chainid, address(this)); all of it is bound into the channel id.
    struct Params {
        address participantA;
        address participantB;
        /// address(0) = ETH, otherwise an ERC-20 token.
        address asset;
        /// Length of the challenge window in seconds.
        uint64 challengeDuration;
        uint256 nonce;
    }

    /// @notice Collateral a ledger channel locks for a virtual channel (EIP-712 `Guarantee`).
    struct Guarantee {
        bytes32 virtualChannelId;
        uint256 fromA;
        uint256 fromB;
        /// false: the ledger's participant A stands for the virtual channel's A (and B for B);
        /// true: the ledger's B stands for the virtual channel's A (ADR 0011, ADR 0026).
        bool crossed;
        /// The virtual channel's locks settle by this time at the latest: a lock expiring later
        /// counts as expiring now (revealed only if revealed by then, else refunded), so no lock
        /// inside the virtual channel can keep this collateral from being resolved (ADR 0026).
        uint64 locksUntil;
    }

    /// @notice A channel state as both participants sign it (EIP-712 `State`).
    struct State {
        bytes32 channelId;
        uint64 version;
        uint256 balanceA;
        uint256 balanceB;
        bytes32 locksRoot;
        uint256 locksTotal;
        Guarantee[] guarantees;
        bool isFinal;
    }

    /// @notice A pending HTLC lock, a leaf of the state's `locksRoot`.
    struct Lock {
        uint64 id;
        uint256 amount;
        bytes32 hashlock;
        uint64 expiry;
        /// 0 = participant A offered (and pays) the lock, 1 = participant B.
        uint8 sender;
    }

    /// @notice A secp256k1 signature over an EIP-712 digest; v is 27 or 28, s must be low.
    struct Sig {
        bytes32 r;
        bytes32 s;
        uint8 v;
    }

    /// @notice The per-channel slot.
    struct Channel {
        /// What the channel still holds in its asset.
        uint128 holdings;
        /// Version of the disputed (or cooperatively closed) state.
        uint64 version;
        /// 0 while open; end of the challenge window once disputed; close time if cooperative.
        uint48 finalizesAt;
        /// Balances have been paid out; only locks and guarantees may still be resolved.
        bool concluded;
    }

    // ------------------------------------------------------------------------------------------
    // Errors
    // ------------------------------------------------------------------------------------------

    /// @notice The state names another channel than the one its parameters identify.
    error ChannelIdMismatch(bytes32 expected, bytes32 actual);
    /// @notice A deposit's expected holdings differ from the current holdings (ordering race).
    error UnexpectedHoldings(uint256 expected, uint256 actual);
    /// @notice msg.value does not match the deposit (ETH) or is non-zero (ERC-20).
    error IncorrectValue(uint256 expected, uint256 actual);
    /// @notice A deposit of nothing.
    error ZeroAmount();
    /// @notice Holdings would exceed 2^128 - 1.
    error HoldingsOverflow();
    /// @notice The channel's asset has no code.
    error NotAToken(address asset);
    /// @notice The token refused transferFrom, or the adjudicator received nothing.
    error TokenTransferFailed(address token);
    /// @notice The challenge duration cannot be represented as a window end.
    error ChallengeDurationTooLong(uint64 challengeDuration);
    /// @notice Deposits are accepted only while the channel is open (no dispute, not concluded).
    error ChannelNotOpen();
    /// @notice close() on a channel that is already disputed: use challenge().
    error AlreadyDisputed();
    /// @notice challenge()/conclude() on a channel that has no dispute.
    error NotDisputed();
    /// @notice The channel's balances were already paid out.
    error AlreadyConcluded();
    /// @notice Locks and guarantees are resolved only after the channel is concluded.
    error NotConcluded();
    /// @notice conclude() before the challenge window ended.
    error ChallengeWindowOpen(uint48 finalizesAt);
    /// @notice challenge() or cooperativeClose() after the challenge window ended.
    error ChallengeWindowClosed(uint48 finalizesAt);
    /// @notice The submitted version does not supersede the recorded one.
    error StaleVersion(uint64 submitted, uint64 recorded);
    /// @notice cooperativeClose() with a state whose isFinal flag is false.
    error NotFinal();
    /// @notice A signature with s in the upper half of the curve order (malleable).
    error HighS();
    /// @notice A signature with v not in {27, 28}, or from which no key recovers.
    error InvalidSignature();
    /// @notice A valid signature by someone other than the expected participant.
    error WrongSigner(address expected, address actual);
    /// @notice The state's amounts sum beyond 2^256 - 1.
    error StateTotalOverflow();
    /// @notice The supplied state is not the one recorded for the channel.
    error StateMismatch();
    /// @notice The lock is not under the state's locksRoot.
    error InvalidLockProof();
    /// @notice A lock whose sender is neither 0 nor 1.
    error InvalidLockSender(uint8 sender);
    /// @notice The lock was already paid out.
    error LockAlreadyResolved();
    /// @notice The preimage is unknown and the lock has not expired yet.
    error LockNotExpired(uint64 expiry);
    /// @notice No guarantee at this index in the state.
    error GuaranteeIndexOutOfRange(uint256 index);
    /// @notice The virtual channel's parameters or state do not match the guarantee.
    error GuaranteeMismatch();
    /// @notice The guarantee was already paid out.
    error GuaranteeAlreadyResolved();
    /// @notice The virtual channel has neither a co-signed final state nor a finalized dispute.
    error VirtualNotFinal();
    /// @notice The supplied virtual-channel locks do not hash to its locksRoot or do not add up
    /// to its locksTotal.
    error VirtualLocksMismatch();
    /// @notice Another state of the virtual channel already settled one of its guarantees.
    error VirtualOutcomeMismatch(bytes32 recorded);
    /// @notice A virtual channel's state may not itself hold guarantees.
    error NestedGuarantees();
    /// @notice resolveGuaranteeWithheld() before `locksUntil + WITHHELD_GRACE`.
    error WithheldGraceOpen(uint256 from);
    /// @notice resolveGuaranteeWithheld() for a virtual state without locks (resolveGuarantee
    /// takes it whole).
    error NoLocksWithheld();
    /// @notice A nested call into the adjudicator.
    error Reentrant();
    /// @notice claim() with nothing owed.
    error NothingToClaim();
    /// @notice claim() could not transfer to the chosen address.
    error PayoutFailed(address to);

    // ------------------------------------------------------------------------------------------
    // Events
    // ------------------------------------------------------------------------------------------

    /// @notice Funds were added to a channel.
    event Deposited(
        bytes32 indexed channelId, address indexed asset, address indexed depositor, uint256 amount, uint256 holdings
    );
    /// @notice A co-signed state was registered by close() or challenge(); it wins unless a
    /// higher version is registered before `finalizesAt`.
    event Disputed(bytes32 indexed channelId, uint64 version, uint48 finalizesAt, State state);
    /// @notice Balances were paid out (cooperatively or after the window).
    event Concluded(bytes32 indexed channelId, uint64 version, uint256 toA, uint256 toB, bool cooperative);
    /// @notice A lock was paid to its receiver (preimage revealed in time) or refunded.
    event LockResolved(bytes32 indexed channelId, uint64 lockId, address to, uint256 amount, bool revealed);
    /// @notice A virtual channel's outcome was recorded by the first resolution of one of its
    /// guarantees: the state and every one of its locks, whole, so every other ledger holding a
    /// guarantee for it can be resolved by the same (ADR 0026).
    event VirtualOutcome(bytes32 indexed virtualChannelId, State state, Lock[] locks);
    /// @notice A virtual channel's outcome was recorded without its locks, which nobody
    /// supplied within `WITHHELD_GRACE` of the guarantees' `locksUntil`: its balances stand and
    /// its locked total goes, on every ledger, to the side that is not one of its parties (the
    /// hub's); see resolveGuaranteeWithheld().
    event LocksWithheld(bytes32 indexed virtualChannelId, State state);
    /// @notice A guarantee was split between the ledger channel's participants.
    event GuaranteeResolved(
        bytes32 indexed channelId, bytes32 indexed virtualChannelId, uint256 index, uint256 toA, uint256 toB
    );
    /// @notice A payout could not be delivered; `to` can claim() it.
    event PayoutDeferred(address indexed to, address indexed asset, uint256 amount);
    /// @notice Deferred payouts were claimed.
    event Claimed(address indexed owner, address indexed asset, address to, uint256 amount);

    // ------------------------------------------------------------------------------------------
    // Constants and storage
    // ------------------------------------------------------------------------------------------

    /// @notice keccak256 of the EIP-712 `Guarantee` type.
    bytes32 public constant GUARANTEE_TYPEHASH =
        keccak256("Guarantee(bytes32 virtualChannelId,uint256 fromA,uint256 fromB,bool crossed,uint64 locksUntil)");
    /// @notice keccak256 of the EIP-712 `State` type (with `Guarantee` appended).
    bytes32 public constant STATE_TYPEHASH = keccak256(
        "State(bytes32 channelId,uint64 version,uint256 balanceA,uint256 balanceB,bytes32 locksRoot,uint256 locksTotal,Guarantee[] guarantees,bool isFinal)Guarantee(bytes32 virtualChannelId,uint256 fromA,uint256 fromB,bool crossed,uint64 locksUntil)"
    );
    bytes32 private constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    /// @dev secp256k1 order / 2: signatures with a larger s are rejected (malleability).
    uint256 private constant HALF_ORDER = 0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0;
    /// @dev Longest accepted challenge window (~34,800 years): keeps the window end in uint48.
    uint64 public constant MAX_CHALLENGE_DURATION = 2 ** 40;
    /// @notice Time after a guarantee's `locksUntil` from which its virtual channel's registered
    /// state may be resolved without its locks (resolveGuaranteeWithheld): long enough for an
    /// honest party, online, to conclude its own ledger (nodes accept windows of 30 days at
    /// most) and resolve it with the locks it holds.
    uint64 public constant WITHHELD_GRACE = 64 days;

    /// @notice The registry whose reveal times settle HTLC locks.
    SecretRegistry public immutable registry;
    uint256 private immutable _cachedChainId;
    bytes32 private immutable _cachedDomainSeparator;

    /// @notice The per-channel slot, by channel id.
    mapping(bytes32 channelId => Channel) public channels;
    /// @notice EIP-712 struct hash of the disputed state, or of the concluded state while it has
    /// locks or guarantees to resolve; zero otherwise.
    mapping(bytes32 channelId => bytes32 stateHash) public fingerprints;
    /// @notice Locks already paid out, by channel id and lock leaf.
    mapping(bytes32 channelId => mapping(bytes32 leaf => bool)) public lockResolved;
    /// @notice Guarantees already paid out, by channel id and index in the concluded state.
    mapping(bytes32 channelId => mapping(uint256 index => bool)) public guaranteeResolved;
    /// @notice The state (EIP-712 struct hash) that settles the guarantees of a virtual channel,
    /// fixed when the first of them is resolved (by resolveGuaranteeWithheld: that hash tagged,
    /// `_withheldTag`, so the two ways never mix).
    mapping(bytes32 virtualChannelId => bytes32 stateHash) public virtualOutcomes;
    /// @notice Payouts that could not be delivered, by asset and owner.
    mapping(address asset => mapping(address owner => uint256)) public unclaimed;

    bool private transient _entered;

    modifier nonReentrant() {
        if (_entered) revert Reentrant();
        _entered = true;
        _;
        _entered = false;
    }

    /// @param registry_ the SecretRegistry that settles HTLC locks
    constructor(SecretRegistry registry_) {
        registry = registry_;
        _cachedChainId = block.chainid;
        _cachedDomainSeparator = _buildDomainSeparator();
    }

    // ------------------------------------------------------------------------------------------
    // Views
    // ------------------------------------------------------------------------------------------

    /// @notice keccak256(abi.encode(chainId, adjudicator, A, B, asset, challengeDuration, nonce)).
    function channelId(Params calldata p) public view returns (bytes32) {
        return keccak256(
            abi.encode(block.chainid, address(this), p.participantA, p.participantB, p.asset, p.challengeDuration, p.nonce)
        );
    }

    /// @notice The EIP-712 domain separator (name "vhub", version "1", chain id, this contract).
    function domainSeparator() public view returns (bytes32) {
        return block.chainid == _cachedChainId ? _cachedDomainSeparator : _buildDomainSeparator();
    }

    /// @notice The EIP-712 struct hash of a state (also the fingerprint stored in disputes).
    function hashState(State calldata s) public pure returns (bytes32) {
        return _hashState(s);
    }

    /// @notice The digest both participants sign: keccak256(0x1901 ‖ domainSeparator ‖ hashState).
    function stateDigest(State calldata s) external view returns (bytes32) {
        return _digest(_hashState(s));
    }

    // ------------------------------------------------------------------------------------------
    // Deposit
    // ------------------------------------------------------------------------------------------

    /// @notice Add `amount` of the channel's asset. Reverts unless the channel holds exactly
    /// `expectedHeld` first, so two depositors cannot both believe they funded the same part.
    /// ERC-20 deposits credit what the adjudicator actually received (approve it first).
    function deposit(Params calldata p, uint256 expectedHeld, uint256 amount) external payable nonReentrant {
        if (p.challengeDuration > MAX_CHALLENGE_DURATION) revert ChallengeDurationTooLong(p.challengeDuration);
        bytes32 cid = channelId(p);
        Channel memory ch = channels[cid];
        if (ch.finalizesAt != 0 || ch.concluded) revert ChannelNotOpen();
        if (ch.holdings != expectedHeld) revert UnexpectedHoldings(expectedHeld, ch.holdings);
        if (amount == 0) revert ZeroAmount();
        uint256 credited;
        if (p.asset == address(0)) {
            if (msg.value != amount) revert IncorrectValue(amount, msg.value);
            credited = amount;
        } else {
            if (msg.value != 0) revert IncorrectValue(0, msg.value);
            if (p.asset.code.length == 0) revert NotAToken(p.asset);
            // Interaction before effect is safe here: the guard blocks every re-entry, and
            // crediting the measured difference defends against fee-on-transfer tokens.
            uint256 before = IERC20Minimal(p.asset).balanceOf(address(this));
            if (!_callToken(p.asset, abi.encodeCall(IERC20Minimal.transferFrom, (msg.sender, address(this), amount)))) {
                revert TokenTransferFailed(p.asset);
            }
            uint256 afterwards = IERC20Minimal(p.asset).balanceOf(address(this));
            if (afterwards <= before) revert TokenTransferFailed(p.asset);
            credited = afterwards - before;
        }
        uint256 held = uint256(ch.holdings) + credited;
        if (held > type(uint128).max) revert HoldingsOverflow();
        channels[cid].holdings = uint128(held);
        emit Deposited(cid, p.asset, msg.sender, credited, held);
    }

    // ------------------------------------------------------------------------------------------
    // Closing
    // ------------------------------------------------------------------------------------------

    /// @notice Close at once with a final state signed by both participants, paying balances.
    /// Allowed while open, or during a dispute's window with a state not older than the
    /// disputed one (the final state ends the dispute).
    function cooperativeClose(Params calldata p, State calldata s, Sig calldata sigA, Sig calldata sigB)
        external
        nonReentrant
    {
        bytes32 cid = _checkedChannelId(p, s);
        if (!s.isFinal) revert NotFinal();
        Channel memory ch = channels[cid];
        if (ch.concluded) revert AlreadyConcluded();
        if (ch.finalizesAt != 0) {
            // Once the window is over the disputed state is the outcome, for the participants
            // and for the ledgers whose guarantees it settles.
            if (block.timestamp >= ch.finalizesAt) revert ChallengeWindowClosed(ch.finalizesAt);
            if (s.version < ch.version) revert StaleVersion(s.version, ch.version);
        }
        bytes32 stateHash = _hashState(s);
        _checkSignatures(p, _digest(stateHash), sigA, sigB);
        _checkTotal(s);

        bool residual = s.locksRoot != bytes32(0) || s.guarantees.length != 0;
        if (residual) {
            fingerprints[cid] = stateHash;
        } else if (ch.finalizesAt != 0) {
            delete fingerprints[cid];
        }
        ch.version = s.version;
        if (ch.finalizesAt == 0) ch.finalizesAt = uint48(block.timestamp);
        _conclude(cid, ch, p, s, true);
    }

    /// @notice Start a dispute with a state signed by both participants; it wins unless a higher
    /// version is registered within `challengeDuration` seconds. Anyone may call (watchtowers).
    function close(Params calldata p, State calldata s, Sig calldata sigA, Sig calldata sigB) external nonReentrant {
        bytes32 cid = _checkedChannelId(p, s);
        Channel memory ch = channels[cid];
        if (ch.concluded) revert AlreadyConcluded();
        if (ch.finalizesAt != 0) revert AlreadyDisputed();
        _register(cid, ch, p, s, sigA, sigB);
    }

    /// @notice Replace the disputed state with a strictly higher co-signed version while the
    /// window is open; the window restarts so the other side can answer in turn.
    function challenge(Params calldata p, State calldata s, Sig calldata sigA, Sig calldata sigB)
        external
        nonReentrant
    {
        bytes32 cid = _checkedChannelId(p, s);
        Channel memory ch = channels[cid];
        if (ch.concluded) revert AlreadyConcluded();
        if (ch.finalizesAt == 0) revert NotDisputed();
        if (block.timestamp >= ch.finalizesAt) revert ChallengeWindowClosed(ch.finalizesAt);
        if (s.version <= ch.version) revert StaleVersion(s.version, ch.version);
        _register(cid, ch, p, s, sigA, sigB);
    }

    /// @notice After the window, pay the disputed state's balances (A first, then B, each capped
    /// by what the channel holds). Anyone may call; `s` must be the disputed state.
    function conclude(Params calldata p, State calldata s) external nonReentrant {
        bytes32 cid = _checkedChannelId(p, s);
        Channel memory ch = channels[cid];
        if (ch.concluded) revert AlreadyConcluded();
        if (ch.finalizesAt == 0) revert NotDisputed();
        if (block.timestamp < ch.finalizesAt) revert ChallengeWindowOpen(ch.finalizesAt);
        if (fingerprints[cid] != _hashState(s)) revert StateMismatch();
        _conclude(cid, ch, p, s, false);
    }

    // ------------------------------------------------------------------------------------------
    // Locks and guarantees of a concluded channel
    // ------------------------------------------------------------------------------------------

    /// @notice Pay one pending lock of the concluded state: to its receiver if its preimage was
    /// registered at or before its expiry, else (once expired) back to its sender.
    /// @param proof sibling hashes from the lock's leaf to `s.locksRoot` (sorted-pair tree)
    function unlock(Params calldata p, State calldata s, Lock calldata lock, bytes32[] calldata proof)
        external
        nonReentrant
    {
        bytes32 cid = _checkedChannelId(p, s);
        Channel memory ch = channels[cid];
        if (!ch.concluded) revert NotConcluded();
        if (fingerprints[cid] != _hashState(s)) revert StateMismatch();
        bytes32 leaf = _leaf(lock);
        if (!_verifyProof(leaf, proof, s.locksRoot)) revert InvalidLockProof();
        if (lockResolved[cid][leaf]) revert LockAlreadyResolved();
        bool revealed = _lockRevealed(lock);

        lockResolved[cid][leaf] = true;
        uint256 amount = lock.amount < ch.holdings ? lock.amount : ch.holdings;
        channels[cid].holdings = uint128(ch.holdings - amount);
        // sender A & revealed -> B; sender A & refunded -> A; sender B mirrors.
        address to = (lock.sender == 0) == revealed ? p.participantB : p.participantA;
        emit LockResolved(cid, lock.id, to, amount, revealed);
        _pay(p.asset, to, amount);
    }

    /// @notice Split guarantee `index` of the concluded ledger state as the virtual channel's
    /// final state says. The first resolution for a virtual channel fixes that state for all
    /// ledgers: the state of its finalized on-chain dispute if there is one (`virtSigs` may be
    /// empty), otherwise a state marked final and signed by both virtual participants
    /// (`virtSigs` = [A's, B's]). Later resolutions must present the same state.
    /// `virtLocks` are all of the virtual state's pending locks in id order (each must be
    /// settleable now: revealed in time, or expired; a lock counts as expiring at the
    /// guarantee's `locksUntil` if that is sooner).
    function resolveGuarantee(
        Params calldata ledger,
        State calldata ledgerState,
        uint256 index,
        Params calldata virt,
        State calldata virtState,
        Sig[] calldata virtSigs,
        Lock[] calldata virtLocks
    ) external nonReentrant {
        bytes32 cid = _checkedChannelId(ledger, ledgerState);
        Channel memory ch = channels[cid];
        if (!ch.concluded) revert NotConcluded();
        if (fingerprints[cid] != _hashState(ledgerState)) revert StateMismatch();
        if (index >= ledgerState.guarantees.length) revert GuaranteeIndexOutOfRange(index);
        Guarantee calldata g = ledgerState.guarantees[index];
        bytes32 vid = channelId(virt);
        if (vid != g.virtualChannelId || virtState.channelId != vid) revert GuaranteeMismatch();
        if (guaranteeResolved[cid][index]) revert GuaranteeAlreadyResolved();
        bool first = _settleVirtual(vid, virt, virtState, virtSigs);
        uint256 virtA = _virtualOutcomeA(virtState, virtLocks, g.locksUntil);
        if (first) emit VirtualOutcome(vid, virtState, virtLocks);
        _payGuarantee(cid, ch, ledger, g, index, vid, virtA);
    }

    /// @notice Split guarantee `index` of the concluded ledger state by its virtual channel's
    /// finalized dispute state `virtState` when nobody supplied that state's locks: from
    /// `locksUntil + WITHHELD_GRACE`, the state's balances stand and its `locksTotal` goes to the
    /// ledger side that is not one of the virtual channel's parties (the hub's; between two
    /// hubs, the side standing for its A). Its parties, who alone hold the locks, could
    /// otherwise keep a hub's guarantee locked for ever; an honest party resolves with the locks
    /// long before (then this is refused). The first such resolution records the outcome for
    /// every ledger (`LocksWithheld`); a normal resolution after it is refused, and this one
    /// after a normal one.
    function resolveGuaranteeWithheld(
        Params calldata ledger,
        State calldata ledgerState,
        uint256 index,
        Params calldata virt,
        State calldata virtState
    ) external nonReentrant {
        bytes32 cid = _checkedChannelId(ledger, ledgerState);
        Channel memory ch = channels[cid];
        if (!ch.concluded) revert NotConcluded();
        if (fingerprints[cid] != _hashState(ledgerState)) revert StateMismatch();
        if (index >= ledgerState.guarantees.length) revert GuaranteeIndexOutOfRange(index);
        Guarantee calldata g = ledgerState.guarantees[index];
        bytes32 vid = channelId(virt);
        if (vid != g.virtualChannelId || virtState.channelId != vid) revert GuaranteeMismatch();
        if (guaranteeResolved[cid][index]) revert GuaranteeAlreadyResolved();
        uint256 from = uint256(g.locksUntil) + WITHHELD_GRACE;
        if (block.timestamp < from) revert WithheldGraceOpen(from);
        if (virtState.locksTotal == 0) revert NoLocksWithheld();
        if (virtState.guarantees.length != 0) revert NestedGuarantees();
        bytes32 stateHash = _hashState(virtState);
        bytes32 tagged = _withheldTag(stateHash);
        bytes32 recorded = virtualOutcomes[vid];
        if (recorded == bytes32(0)) {
            // Only the state of the channel's finalized dispute: a co-signed final state is
            // resolved whole by whoever holds it (its locks are in it).
            Channel memory vch = channels[vid];
            if (vch.finalizesAt == 0 || block.timestamp < vch.finalizesAt || fingerprints[vid] != stateHash) {
                revert StateMismatch();
            }
            virtualOutcomes[vid] = tagged;
            emit LocksWithheld(vid, virtState);
        } else if (recorded != tagged) {
            revert VirtualOutcomeMismatch(recorded);
        }
        uint256 virtA = virtState.balanceA;
        address standsForA = g.crossed ? ledger.participantB : ledger.participantA;
        if (standsForA != virt.participantA) virtA = _add(virtA, virtState.locksTotal);
        _payGuarantee(cid, ch, ledger, g, index, vid, virtA);
    }

    /// @dev Pay guarantee `index` of the concluded ledger `cid` out by the virtual channel's A
    /// total `virtA` (ADR 0011), each side capped by what the ledger still holds.
    function _payGuarantee(
        bytes32 cid,
        Channel memory ch,
        Params calldata ledger,
        Guarantee calldata g,
        uint256 index,
        bytes32 vid,
        uint256 virtA
    ) private {
        (uint256 toA, uint256 toB) = _splitGuarantee(g, virtA);
        uint256 held = ch.holdings;
        if (toA > held) toA = held;
        held -= toA;
        if (toB > held) toB = held;
        held -= toB;

        guaranteeResolved[cid][index] = true;
        channels[cid].holdings = uint128(held);
        emit GuaranteeResolved(cid, vid, index, toA, toB);
        _pay(ledger.asset, ledger.participantA, toA);
        _pay(ledger.asset, ledger.participantB, toB);
    }

    /// @notice Start a dispute of virtual channel `virt` from a guarantee for it in a ledger
    /// state registered on chain (disputed or concluded): the virtual channel's opening as the
    /// guarantee funded it (version 0, the side standing for its A gets that side's part, no
    /// locks). Any co-signed state of the virtual channel with a higher version replaces it by
    /// `challenge` within the window. A guarantee whose virtual channel never got a state
    /// signed by both its participants is so never stuck: it settles back as it was funded
    /// (ADR 0026).
    function disputeVirtual(Params calldata ledger, State calldata ledgerState, uint256 index, Params calldata virt)
        external
        nonReentrant
    {
        bytes32 cid = _checkedChannelId(ledger, ledgerState);
        if (fingerprints[cid] == bytes32(0) || fingerprints[cid] != _hashState(ledgerState)) revert StateMismatch();
        if (index >= ledgerState.guarantees.length) revert GuaranteeIndexOutOfRange(index);
        Guarantee calldata g = ledgerState.guarantees[index];
        bytes32 vid = channelId(virt);
        if (vid != g.virtualChannelId) revert GuaranteeMismatch();
        if (virt.challengeDuration > MAX_CHALLENGE_DURATION) revert ChallengeDurationTooLong(virt.challengeDuration);
        Channel memory vch = channels[vid];
        if (vch.concluded) revert AlreadyConcluded();
        if (vch.finalizesAt != 0) revert AlreadyDisputed();
        State memory opening;
        opening.channelId = vid;
        (opening.balanceA, opening.balanceB) = g.crossed ? (g.fromB, g.fromA) : (g.fromA, g.fromB);
        uint48 finalizesAt = uint48(block.timestamp + virt.challengeDuration);
        vch.finalizesAt = finalizesAt;
        channels[vid] = vch;
        fingerprints[vid] = keccak256(
            abi.encode(
                STATE_TYPEHASH,
                vid,
                uint64(0),
                opening.balanceA,
                opening.balanceB,
                bytes32(0),
                uint256(0),
                keccak256(""),
                false
            )
        );
        emit Disputed(vid, 0, finalizesAt, opening);
    }

    /// @notice Withdraw payouts that could not be delivered (see PayoutDeferred) to `to`.
    function claim(address asset, address to) external nonReentrant {
        uint256 amount = unclaimed[asset][msg.sender];
        if (amount == 0) revert NothingToClaim();
        unclaimed[asset][msg.sender] = 0;
        emit Claimed(msg.sender, asset, to, amount);
        if (!_send(asset, to, amount)) revert PayoutFailed(to);
    }

    // ------------------------------------------------------------------------------------------
    // Internals
    // ------------------------------------------------------------------------------------------

    function _register(
        bytes32 cid,
        Channel memory ch,
        Params calldata p,
        State calldata s,
        Sig calldata sigA,
        Sig calldata sigB
    ) private {
        bytes32 stateHash = _hashState(s);
        _checkSignatures(p, _digest(stateHash), sigA, sigB);
        _checkTotal(s);
        if (p.challengeDuration > MAX_CHALLENGE_DURATION) revert ChallengeDurationTooLong(p.challengeDuration);
        uint48 finalizesAt = uint48(block.timestamp + p.challengeDuration);
        ch.version = s.version;
        ch.finalizesAt = finalizesAt;
        channels[cid] = ch;
        fingerprints[cid] = stateHash;
        emit Disputed(cid, s.version, finalizesAt, s);
    }

    /// @dev Pays A's balance, then B's, each capped by what is left (ADR 0010: payout priority).
    function _conclude(bytes32 cid, Channel memory ch, Params calldata p, State calldata s, bool cooperative)
        private
    {
        uint256 held = ch.holdings;
        uint256 toA = s.balanceA < held ? s.balanceA : held;
        held -= toA;
        uint256 toB = s.balanceB < held ? s.balanceB : held;
        held -= toB;
        ch.holdings = uint128(held);
        ch.concluded = true;
        channels[cid] = ch;
        emit Concluded(cid, s.version, toA, toB, cooperative);
        _pay(p.asset, p.participantA, toA);
        _pay(p.asset, p.participantB, toB);
    }

    /// @dev Fix the virtual channel's outcome the first time one of its guarantees is resolved,
    /// so every ledger channel guaranteeing it is split by the same state (ADR 0011): its
    /// finalized on-chain dispute if it has one, else a final state both its participants signed.
    /// Returns true when this call recorded it (the first resolution).
    function _settleVirtual(bytes32 vid, Params calldata virt, State calldata virtState, Sig[] calldata virtSigs)
        private
        returns (bool)
    {
        if (virtState.guarantees.length != 0) revert NestedGuarantees();
        bytes32 stateHash = _hashState(virtState);
        bytes32 recorded = virtualOutcomes[vid];
        if (recorded != bytes32(0)) {
            if (recorded != stateHash) revert VirtualOutcomeMismatch(recorded);
            return false;
        }
        Channel memory vch = channels[vid];
        bytes32 fingerprint = fingerprints[vid];
        if (vch.finalizesAt != 0 && block.timestamp >= vch.finalizesAt && fingerprint != bytes32(0)) {
            if (fingerprint != stateHash) revert StateMismatch();
        } else {
            if (virtSigs.length != 2 || !virtState.isFinal) revert VirtualNotFinal();
            _checkSignatures(virt, _digest(stateHash), virtSigs[0], virtSigs[1]);
        }
        virtualOutcomes[vid] = stateHash;
        return true;
    }

    /// @dev The outcome hash resolveGuaranteeWithheld() records for `stateHash` (never a state's
    /// own hash, so a normal resolution cannot match it, nor it a normal one's).
    function _withheldTag(bytes32 stateHash) private pure returns (bytes32) {
        return keccak256(abi.encode(stateHash, "locks withheld"));
    }

    /// @dev What the virtual channel's A side ends with: its balance plus every lock that settles
    /// in A's favour, each lock settled by `until` at the latest. Also checks that `locks` are
    /// exactly the state's locks, and that they add up to its `locksTotal` (a state whose total
    /// disagrees with its locks is one no honest node signs or can reproduce).
    function _virtualOutcomeA(State calldata virtState, Lock[] calldata locks, uint64 until)
        private
        view
        returns (uint256 a)
    {
        a = virtState.balanceA;
        uint256 n = locks.length;
        bytes32[] memory leaves = new bytes32[](n);
        uint256 total;
        for (uint256 i = 0; i < n; ++i) {
            Lock calldata lock = locks[i];
            leaves[i] = _leaf(lock);
            total = _add(total, lock.amount);
            bool revealed = _revealedBy(lock, lock.expiry < until ? lock.expiry : until);
            // A receives when B sent a revealed lock, or when A's own lock is refunded.
            if ((lock.sender == 1) == revealed) a = _add(a, lock.amount);
        }
        if (_merkleRoot(leaves) != virtState.locksRoot || total != virtState.locksTotal) {
            revert VirtualLocksMismatch();
        }
    }

    /// @dev The ledger side standing for the virtual channel's A (named by the signed
    /// guarantee's `crossed`) gets min(virtA, guarantee), the other side the rest (ADR 0011).
    function _splitGuarantee(Guarantee calldata g, uint256 virtA) private pure returns (uint256 toA, uint256 toB) {
        uint256 total = g.fromA + g.fromB;
        uint256 left = virtA < total ? virtA : total;
        toA = g.crossed ? total - left : left;
        toB = total - toA;
    }

    /// @dev True if the lock's preimage was revealed at or before expiry; false if it was not and
    /// the lock has expired; reverts while it can still be revealed.
    function _lockRevealed(Lock calldata lock) private view returns (bool) {
        return _revealedBy(lock, lock.expiry);
    }

    /// @dev As `_lockRevealed`, with the lock settling at `expiry` (its own or an earlier bound).
    function _revealedBy(Lock calldata lock, uint64 expiry) private view returns (bool) {
        if (lock.sender > 1) revert InvalidLockSender(lock.sender);
        uint256 revealedAt = registry.revealedAt(lock.hashlock);
        if (revealedAt != 0 && revealedAt <= expiry) return true;
        if (block.timestamp > expiry) return false;
        revert LockNotExpired(expiry);
    }

    function _checkedChannelId(Params calldata p, State calldata s) private view returns (bytes32 cid) {
        cid = channelId(p);
        if (s.channelId != cid) revert ChannelIdMismatch(cid, s.channelId);
    }

    function _checkSignatures(Params calldata p, bytes32 digest, Sig calldata sigA, Sig calldata sigB) private pure {
        address a = _recover(digest, sigA);
        if (a != p.participantA) revert WrongSigner(p.participantA, a);
        address b = _recover(digest, sigB);
        if (b != p.participantB) revert WrongSigner(p.participantB, b);
    }

    function _recover(bytes32 digest, Sig calldata sig) private pure returns (address signer) {
        if (uint256(sig.s) > HALF_ORDER) revert HighS();
        if (sig.v != 27 && sig.v != 28) revert InvalidSignature();
        signer = ecrecover(digest, sig.v, sig.r, sig.s);
        if (signer == address(0)) revert InvalidSignature();
    }

    /// @dev Rejects states whose amounts overflow; payouts are further capped by holdings.
    function _checkTotal(State calldata s) private pure {
        uint256 total = s.balanceA;
        total = _add(total, s.balanceB);
        total = _add(total, s.locksTotal);
        uint256 n = s.guarantees.length;
        for (uint256 i = 0; i < n; ++i) {
            total = _add(total, s.guarantees[i].fromA);
            total = _add(total, s.guarantees[i].fromB);
        }
    }

    function _add(uint256 x, uint256 y) private pure returns (uint256 z) {
        unchecked {
            z = x + y;
        }
        if (z < x) revert StateTotalOverflow();
    }

    function _hashState(State calldata s) private pure returns (bytes32) {
        uint256 n = s.guarantees.length;
        bytes32[] memory hashes = new bytes32[](n);
        for (uint256 i = 0; i < n; ++i) {
            Guarantee calldata g = s.guarantees[i];
            hashes[i] = keccak256(
                abi.encode(GUARANTEE_TYPEHASH, g.virtualChannelId, g.fromA, g.fromB, g.crossed, g.locksUntil)
            );
        }
        return keccak256(
            abi.encode(
                STATE_TYPEHASH,
                s.channelId,
                s.version,
                s.balanceA,
                s.balanceB,
                s.locksRoot,
                s.locksTotal,
                keccak256(abi.encodePacked(hashes)),
                s.isFinal
            )
        );
    }

    function _digest(bytes32 stateHash) private view returns (bytes32) {
        return keccak256(abi.encodePacked(hex"1901", domainSeparator(), stateHash));
    }

    function _buildDomainSeparator() private view returns (bytes32) {
        return keccak256(abi.encode(DOMAIN_TYPEHASH, keccak256("vhub"), keccak256("1"), block.chainid, address(this)));
    }

    function _leaf(Lock calldata lock) private pure returns (bytes32) {
        return keccak256(abi.encode(lock.id, lock.amount, lock.hashlock, lock.expiry, lock.sender));
    }

    function _hashPair(bytes32 a, bytes32 b) private pure returns (bytes32 h) {
        (bytes32 lo, bytes32 hi) = a <= b ? (a, b) : (b, a);
        assembly ("memory-safe") {
            mstore(0x00, lo)
            mstore(0x20, hi)
            h := keccak256(0x00, 0x40)
        }
    }

    function _verifyProof(bytes32 leaf, bytes32[] calldata proof, bytes32 root) private pure returns (bool) {
        bytes32 node = leaf;
        for (uint256 i = 0; i < proof.length; ++i) {
            node = _hashPair(node, proof[i]);
        }
        return node == root;
    }

    /// @dev Root of the sorted-pair tree (odd last node carried up; no leaves -> 0), in place.
    function _merkleRoot(bytes32[] memory level) private pure returns (bytes32) {
        uint256 n = level.length;
        if (n == 0) return bytes32(0);
        while (n > 1) {
            uint256 m = 0;
            for (uint256 i = 0; i < n; i += 2) {
                level[m] = i + 1 < n ? _hashPair(level[i], level[i + 1]) : level[i];
                ++m;
            }
            n = m;
        }
        return level[0];
    }

    /// @dev Push a payout; if the recipient or token refuses it, keep it claimable instead so one
    /// party can never block the other's payout.
    function _pay(address asset, address to, uint256 amount) private {
        if (amount == 0) return;
        if (!_send(asset, to, amount)) {
            unclaimed[asset][to] += amount;
            emit PayoutDeferred(to, asset, amount);
        }
    }

    function _send(address asset, address to, uint256 amount) private returns (bool ok) {
        if (asset == address(0)) {
            assembly ("memory-safe") {
                ok := call(gas(), to, amount, 0, 0, 0, 0)
            }
        } else {
            ok = _callToken(asset, abi.encodeCall(IERC20Minimal.transfer, (to, amount)));
        }
    }

    /// @dev Call a token; success means the call did not revert and returned true or nothing
    /// (from an address with code). Return data beyond one word is never copied.
    function _callToken(address token, bytes memory data) private returns (bool ok) {
        assembly ("memory-safe") {
            ok := call(gas(), token, 0, add(data, 0x20), mload(data), 0x00, 0x20)
            if ok {
                switch returndatasize()
                case 0 { ok := gt(extcodesize(token), 0) }
                default { ok := and(gt(returndatasize(), 0x1f), eq(mload(0x00), 1)) }
            }
        }
    }
}
