/**
 * The YAML that `choreo-ingest`'s mirror writes (one entity a file) and `export --format yaml`
 * prints (a stream of them), read by Backstage's own parser (`parseEntityYaml`, which the catalog
 * uses for every YAML location): each entity must come back as the JSON it was written from.
 * The Python side writes with libyaml's emitter where PyYAML has it, whose line folding of long
 * double-quoted strings differs from the pure-Python emitter's (which writes where it has not):
 * both are read back. Strings go into values, keys (a long one is written `? key`) and lists.
 */
import { parseEntityYaml } from '@backstage/plugin-catalog-node';
import { pythonOutput } from './support/choreo';

const LOCATION = { type: 'file', target: '/mirror/api/default/x.yaml' };

/** Strings made to test quoting and folding: fixed awkward ones, and seeded random mixes. */
const DUMP = String.raw`
import json, random
import yaml
from choreo_ingest import mirror

class PythonEmitter(yaml.SafeDumper):
    """The pure-Python emitter with the mirror's resolvers and representers: where PyYAML has
    no libyaml, the mirror writes with it."""

PythonEmitter.yaml_implicit_resolvers = mirror._Yaml12SafeDumper.yaml_implicit_resolvers
PythonEmitter.yaml_representers = mirror._Yaml12SafeDumper.yaml_representers

fixed = [
    "1e3", "1.5e3", "0o17", "0x1F", "8080", "yes", "no", "null", "~", "true", "1_000", "",
    " lead", "trail ", "a: b", "#hash", "- dash", "? q", "@at", "!tag", "&anchor", "*alias",
    "%pct", "{a: b}", "[x]", '"dq"', "'sq'", "back\\slash", "tab\there", "multi\nline\n",
    "trailing space \nnext", "\n\nblank lines\n\n", "  indented\n    more\n", "x" * 300,
    "word " * 60, "\r\nwindows\r\n", "nbsp\u00a0x", "bom\ufeff", "emoji \U0001F600 x",
    "CJK \u6f22\u5b57", "NEL\x85LS\u2028PS\u2029", "ctrl\x01\x7f", "é ü ß",
    json.dumps({"openapi": "3.0.0", "paths": {f"/p{i}": {"get": {"summary": "s " * 30}} for i in range(20)}}, indent=2),
    "openapi: 3.0.0\ninfo: {title: v0, version: '1.0'}\npaths:\n  /hello:\n    get: {responses: {'200': {description: ok}}}\n",
]
alphabet = [" ", "  ", "\n", "\t", '"', "'", "\\", ":", "#", "-", "a", "word", "\u00e9", "\u2028", "\x85", "\U0001F600", "{", "}", "0", "1e3"]
rng = random.Random(36)
mixed = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 120))) for _ in range(300)]
bodies = []
for number, text in enumerate(fixed + mixed):
    bodies.append({
        "apiVersion": "backstage.io/v1alpha1",
        "kind": "API",
        "metadata": {"name": f"api-{number}", "namespace": "default", "title": text,
                     "annotations": {"example.com/text": text, f"example.com/{text}": "key"},
                     "tags": ["a", text], "links": [{"url": text, "title": text}]},
        "spec": {"type": "openapi", "lifecycle": "production", "owner": "group:default/team",
                 "definition": text},
    })
python = [yaml.dump(body, Dumper=PythonEmitter, sort_keys=False, allow_unicode=True) for body in bodies]
print(json.dumps({
    "bodies": bodies,
    "files": [mirror.entity_yaml(body).decode("utf-8") for body in bodies],
    "pythonFiles": python,
    "emitter": mirror._Yaml12SafeDumper.__mro__[1].__name__,
}))
`;

function parsed(text: string): unknown[] {
  return [...parseEntityYaml(text, LOCATION)].map(result =>
    result.type === 'entity' ? result.entity : { error: result },
  );
}

describe("the mirror's YAML in Backstage's parser", () => {
  let dumped: { bodies: unknown[]; files: string[]; pythonFiles: string[]; emitter: string };

  beforeAll(async () => {
    dumped = JSON.parse(await pythonOutput(DUMP));
  });

  it("writes with libyaml's emitter (PyYAML's wheels carry it)", () => {
    expect(dumped.emitter).toBe('CSafeDumper');
  });

  it.each(['files', 'pythonFiles'] as const)(
    'reads every file back as the entity it was written from (%s)',
    which => {
      const { bodies } = dumped;
      expect(bodies.length).toBeGreaterThan(300);
      const mismatched = dumped[which].filter((file, index) => {
        const read = parsed(file);
        return read.length !== 1 || JSON.stringify(read[0]) !== JSON.stringify(bodies[index]);
      });
      expect(mismatched).toEqual([]);
    },
  );

  it('reads the stream of `export --format yaml` back as the same entities, in order', () => {
    const stream = dumped.files.map(file => `---\n${file}`).join('');
    expect(parsed(stream)).toEqual(dumped.bodies);
  });
});
