// Validates Backstage entities with @backstage/catalog-model's own policies and kind validators.
//
// Input: NDJSON on stdin, one entity per line (blank lines are skipped).
// Output: one JSON line per problem on stdout: {"line", "ref", "check", "message"}.
// Exit code: 0 when every entity is valid and every relation ref resolves inside the input,
// 1 when there is any problem, 2 when the input cannot be read at all.
//
// Checks, in the order the catalog applies them to an entity a provider emits:
//   envelope  entityEnvelopeSchemaValidator (apiVersion, kind, metadata present)
//   policy    EntityPolicies.allOf([SchemaValidEntityPolicy, DefaultNamespaceEntityPolicy,
//             NoForeignRootFieldsEntityPolicy, FieldFormatEntityPolicy])
//   kind      the built-in kind validators (Component, API, System, Domain, ...); an entity no
//             validator claims is an error, as in the catalog's BuiltinKindsEntityProcessor
//   duplicate two entities with the same ref (the catalog would reject the second); refs are
//             compared case-insensitively, as the catalog compares them
//   ref       spec.system, spec.domain, spec.providesApis, ... must parse (with the entity's
//             namespace and the field's default kind) and name an entity in the input
//             (whatever the case);
//             spec.owner must parse and be a Group or User, but may live outside the input
import { createInterface } from 'node:readline';
import {
  DefaultNamespaceEntityPolicy,
  EntityPolicies,
  FieldFormatEntityPolicy,
  NoForeignRootFieldsEntityPolicy,
  SchemaValidEntityPolicy,
  apiEntityV1alpha1Validator,
  componentEntityV1alpha1Validator,
  domainEntityV1alpha1Validator,
  entityEnvelopeSchemaValidator,
  groupEntityV1alpha1Validator,
  locationEntityV1alpha1Validator,
  parseEntityRef,
  resourceEntityV1alpha1Validator,
  stringifyEntityRef,
  systemEntityV1alpha1Validator,
  userEntityV1alpha1Validator,
} from '@backstage/catalog-model';

const policy = EntityPolicies.allOf([
  new SchemaValidEntityPolicy(),
  new DefaultNamespaceEntityPolicy(),
  new NoForeignRootFieldsEntityPolicy(),
  new FieldFormatEntityPolicy(),
]);
const kindValidators = [
  apiEntityV1alpha1Validator,
  componentEntityV1alpha1Validator,
  domainEntityV1alpha1Validator,
  groupEntityV1alpha1Validator,
  locationEntityV1alpha1Validator,
  resourceEntityV1alpha1Validator,
  systemEntityV1alpha1Validator,
  userEntityV1alpha1Validator,
];
const validateEnvelope = entityEnvelopeSchemaValidator();

// Relation fields per kind, with the kind a bare ref defaults to (as the kinds' models declare).
const relationFields = {
  component: [
    ['spec.system', 'System'],
    ['spec.subcomponentOf', 'Component'],
    ['spec.providesApis', 'API'],
    ['spec.consumesApis', 'API'],
    ['spec.dependsOn', undefined],
    ['spec.dependencyOf', undefined],
  ],
  api: [['spec.system', 'System']],
  resource: [
    ['spec.system', 'System'],
    ['spec.dependsOn', undefined],
    ['spec.dependencyOf', undefined],
  ],
  system: [['spec.domain', 'Domain']],
  domain: [['spec.subdomainOf', 'Domain']],
};
const ownerKinds = ['group', 'user'];

const problems = [];
function report(line, ref, check, message) {
  problems.push({ line, ref, check, message: String(message) });
}

async function checkEntity(line, raw) {
  const ref = describe(raw);
  try {
    validateEnvelope(raw);
  } catch (error) {
    report(line, ref, 'envelope', error.message);
    return undefined;
  }
  let entity;
  try {
    // The policies may mutate (DefaultNamespaceEntityPolicy merges); give them a copy.
    entity = await policy.enforce(structuredClone(raw));
  } catch (error) {
    report(line, ref, 'policy', error.message);
    return undefined;
  }
  let claimed = false;
  for (const validator of kindValidators) {
    try {
      if (await validator.check(entity)) {
        claimed = true;
        break;
      }
    } catch (error) {
      report(line, ref, 'kind', error.message);
      return undefined;
    }
  }
  if (!claimed) {
    report(line, ref, 'kind', `no kind validator recognizes ${entity.apiVersion} ${entity.kind}`);
    return undefined;
  }
  return entity;
}

function describe(raw) {
  try {
    return stringifyEntityRef(raw);
  } catch {
    return null;
  }
}

function folded(ref) {
  return ref.toLocaleLowerCase('en-US');
}

function valuesAt(entity, path) {
  let value = entity;
  for (const key of path.split('.')) {
    value = value?.[key];
  }
  if (value === undefined || value === null) return [];
  return Array.isArray(value) ? value : [value];
}

function checkRefs(line, entity, known) {
  const ref = stringifyEntityRef(entity);
  const namespace = entity.metadata.namespace;
  for (const [path, defaultKind] of relationFields[entity.kind.toLowerCase()] ?? []) {
    for (const target of valuesAt(entity, path)) {
      let parsed;
      try {
        parsed = parseEntityRef(target, { defaultKind, defaultNamespace: namespace });
      } catch (error) {
        report(line, ref, 'ref', `${path}: ${error.message}`);
        continue;
      }
      const targetRef = stringifyEntityRef(parsed);
      if (!known.has(folded(targetRef))) {
        report(line, ref, 'ref', `${path}: ${JSON.stringify(target)} -> ${targetRef} is not in the input`);
      }
    }
  }
  for (const owner of valuesAt(entity, 'spec.owner')) {
    try {
      const parsed = parseEntityRef(owner, { defaultKind: 'Group', defaultNamespace: namespace });
      if (!ownerKinds.includes(parsed.kind.toLowerCase())) {
        report(line, ref, 'ref', `spec.owner: ${JSON.stringify(owner)} is a ${parsed.kind}, not a Group or User`);
      }
    } catch (error) {
      report(line, ref, 'ref', `spec.owner: ${error.message}`);
    }
  }
}

async function main() {
  const valid = [];
  const known = new Map();
  let line = 0;
  for await (const text of createInterface({ input: process.stdin, crlfDelay: Infinity })) {
    line += 1;
    if (!text.trim()) continue;
    let raw;
    try {
      raw = JSON.parse(text);
    } catch (error) {
      report(line, null, 'json', error.message);
      continue;
    }
    const entity = await checkEntity(line, raw);
    if (!entity) continue;
    const ref = stringifyEntityRef(entity);
    if (known.has(folded(ref))) {
      report(line, ref, 'duplicate', `same ref as line ${known.get(folded(ref))}`);
      continue;
    }
    known.set(folded(ref), line);
    valid.push([line, entity]);
  }
  for (const [entityLine, entity] of valid) {
    checkRefs(entityLine, entity, known);
  }
  for (const problem of problems) {
    process.stdout.write(`${JSON.stringify(problem)}\n`);
  }
  process.exitCode = problems.length ? 1 : 0;
}

main().catch((error) => {
  process.stderr.write(`validate.mjs: ${error.stack ?? error}\n`);
  process.exitCode = 2;
});
