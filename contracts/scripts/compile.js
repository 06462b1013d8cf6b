#!/usr/bin/env node
// Compile contracts/sol/**/*.sol with the pinned solc (npm package `solc`, standard-JSON
// interface) and write one artifact per deployable contract to contracts/artifacts/.
//
//   node contracts/scripts/compile.js          # (re)write the artifacts
//   node contracts/scripts/compile.js --check  # recompile and fail if the committed ones differ
//
// Output is deterministic: sources and keys are sorted, no CBOR metadata is appended to the
// bytecode, and each artifact records the sha256 of its source file, so an edited source that
// was not recompiled is caught by --check even when the bytecode would not change.
'use strict';

const fs = require('fs');
const path = require('path');
const crypto = require('crypto');

const CONTRACTS = path.resolve(__dirname, '..');
const REPO = path.resolve(CONTRACTS, '..');
const SRC = path.join(CONTRACTS, 'sol');
const OUT = path.join(CONTRACTS, 'artifacts');
const SOLC_VERSION = '0.8.37';
const SETTINGS = {
  evmVersion: 'cancun',
  viaIR: true,
  optimizer: { enabled: true, runs: 10000 },
  metadata: { appendCBOR: false },
  outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object'] } },
};

function fail(msg) {
  process.stderr.write(`compile: ${msg}\n`);
  process.exit(1);
}

function listSol(dir, rel = '') {
  const out = [];
  for (const entry of fs.readdirSync(path.join(dir, rel), { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const r = rel ? `${rel}/${entry.name}` : entry.name;
    if (entry.isDirectory()) out.push(...listSol(dir, r));
    else if (entry.name.endsWith('.sol')) out.push(r);
  }
  return out;
}

function listJson(dir, rel = '') {
  if (!fs.existsSync(path.join(dir, rel))) return [];
  const out = [];
  for (const entry of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
    const r = rel ? `${rel}/${entry.name}` : entry.name;
    if (entry.isDirectory()) out.push(...listJson(dir, r));
    else if (entry.name.endsWith('.json')) out.push(r);
  }
  return out.sort();
}

function compile() {
  let solc;
  try {
    solc = require(path.join(REPO, 'node_modules', 'solc'));
  } catch (e) {
    fail(`solc not installed (run scripts/setup.sh): ${e.message}`);
  }
  const version = solc.version();
  if (!version.startsWith(`${SOLC_VERSION}+`)) fail(`need solc ${SOLC_VERSION}, found ${version}`);

  const files = listSol(SRC);
  const sources = {};
  const hashes = {};
  for (const f of files) {
    const content = fs.readFileSync(path.join(SRC, f), 'utf8');
    sources[f] = { content };
    hashes[f] = crypto.createHash('sha256').update(content).digest('hex');
  }
  const input = { language: 'Solidity', sources, settings: SETTINGS };
  const output = JSON.parse(solc.compile(JSON.stringify(input)));
  const problems = (output.errors || []).filter((e) => e.severity !== 'info');
  for (const e of problems) process.stderr.write(`${e.formattedMessage || e.message}\n`);
  if (problems.length) fail(`${problems.length} error(s)/warning(s); warnings are treated as errors`);

  const artifacts = {};
  for (const f of files) {
    for (const [name, c] of Object.entries(output.contracts[f] || {}).sort()) {
      const bytecode = c.evm.bytecode.object;
      if (!bytecode) continue; // interfaces and abstract contracts
      const dir = path.posix.dirname(f);
      const rel = dir === '.' ? `${name}.json` : `${dir}/${name}.json`;
      const artifact = {
        contractName: name,
        sourceName: f,
        sourceSha256: hashes[f],
        compiler: { solc: version, settings: { evmVersion: SETTINGS.evmVersion, viaIR: SETTINGS.viaIR, optimizer: SETTINGS.optimizer } },
        abi: c.abi,
        bytecode: `0x${bytecode}`,
        deployedBytecode: `0x${c.evm.deployedBytecode.object}`,
      };
      artifacts[rel] = `${JSON.stringify(artifact, null, 2)}\n`;
    }
  }
  return artifacts;
}

function main() {
  const check = process.argv.includes('--check');
  const fresh = compile();
  const existing = listJson(OUT);
  if (check) {
    const bad = [];
    for (const [rel, text] of Object.entries(fresh)) {
      const file = path.join(OUT, rel);
      if (!fs.existsSync(file)) bad.push(`missing: artifacts/${rel}`);
      else if (fs.readFileSync(file, 'utf8') !== text) bad.push(`stale:   artifacts/${rel}`);
    }
    for (const rel of existing) if (!(rel in fresh)) bad.push(`extra:   artifacts/${rel}`);
    if (bad.length) {
      fail(`committed artifacts differ from a fresh compile; run contracts/scripts/compile.sh\n  ${bad.join('\n  ')}`);
    }
    process.stdout.write(`compile: ${Object.keys(fresh).length} artifacts match a fresh compile\n`);
    return;
  }
  for (const rel of existing) if (!(rel in fresh)) fs.unlinkSync(path.join(OUT, rel));
  for (const [rel, text] of Object.entries(fresh)) {
    const file = path.join(OUT, rel);
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, text);
  }
  process.stdout.write(`compile: wrote ${Object.keys(fresh).length} artifacts to contracts/artifacts/\n`);
}

main();
