// The submit form's argument fields, built from the job's JSON Schema (`args_schema` in
// GET /catalog); the values read back from them; the gateway's 422 entries shown beside them.
//
// integer / number: a number input; a choice (Literal, enum): a select; boolean: a checkbox;
// array: comma-separated text; string: text; anything else (objects, unions, no annotation):
// JSON when it parses, else text. A job that takes **kwargs gets a field for more arguments.

const EXTRA = "*";

export class ArgumentProblems extends Error {
  constructor(problems) {
    super(problems.map(describeProblem).join("; "));
    this.problems = problems; // [{loc: ["args", name, ...], msg}], as the gateway's 422 has them
  }
}

export function describeProblem(problem) {
  const place = problem.loc.slice(1).join(".");
  return place ? `${place}: ${problem.msg}` : problem.msg;
}

export function renderArgumentFields(fieldset, spec) {
  // Rendered again whenever the catalog is reloaded (a new key, a retry): what the user
  // already typed into a field of the same name stays.
  const typed = new Map();
  for (const old of fieldset.querySelectorAll(".arg")) {
    const input = old.querySelector("[data-kind]");
    if (input?.type === "checkbox") typed.set(input.name, input.checked);
    else if (input?.value) typed.set(input.name, input.value);
    old.remove();
  }
  const schema = spec?.args_schema ?? {};
  const required = new Set(schema.required ?? []);
  for (const [name, property] of Object.entries(schema.properties ?? {})) {
    const field = describeField(property, schema);
    fieldset.append(argumentField(name, field, required.has(name), typed.get(name)));
  }
  if (spec && schema.additionalProperties !== false) {
    const more = { kind: "extra", hint: "a JSON object", default: undefined };
    fieldset.append(argumentField(EXTRA, more, false, typed.get(EXTRA)));
  }
  fieldset.hidden = fieldset.querySelector(".arg") === null;
}

// The arguments as the form holds them; empty fields are left out (the job's default applies).
export function readArguments(fieldset) {
  const args = {};
  const problems = [];
  for (const input of fieldset.querySelectorAll("[data-kind]")) {
    try {
      Object.assign(args, readField(input));
    } catch (error) {
      problems.push({ loc: ["args", input.name], msg: error.message });
    }
  }
  if (problems.length) throw new ArgumentProblems(problems);
  return args;
}

// Shows each problem beside its field; returns those that belong to none (an argument given
// in "more arguments", say).
export function showArgumentProblems(fieldset, problems) {
  for (const note of fieldset.querySelectorAll(".arg .problem")) note.textContent = "";
  for (const input of fieldset.querySelectorAll("[data-kind]")) input.removeAttribute("aria-invalid");
  const elsewhere = [];
  for (const problem of problems) {
    const input = document.getElementById(fieldId(problem.loc[1]));
    if (!input || input.name === EXTRA) {
      elsewhere.push(problem);
      continue;
    }
    input.setAttribute("aria-invalid", "true");
    const note = document.getElementById(`${input.id}-problem`);
    const deeper = problem.loc.slice(2).join(".");
    const text = deeper ? `${deeper}: ${problem.msg}` : problem.msg;
    note.textContent = note.textContent ? `${note.textContent}; ${text}` : text;
  }
  return elsewhere;
}

function fieldId(name) {
  return `arg-${name === EXTRA ? "extra" : name}`;
}

function argumentField(name, field, required, typed) {
  const wrapper = document.createElement("div");
  wrapper.className = "arg";
  const id = fieldId(name);
  const label = document.createElement("label");
  label.htmlFor = id;
  label.textContent = name === EXTRA ? "More arguments" : required ? `${name} (required)` : name;
  const input = inputFor(field);
  input.id = id;
  input.name = name;
  input.dataset.kind = field.kind;
  if (field.items) input.dataset.items = field.items;
  input.required = required;
  const hint = document.createElement("span");
  hint.className = "arg-hint";
  hint.textContent = hintFor(field);
  const problem = document.createElement("p");
  problem.className = "problem";
  problem.id = `${id}-problem`;
  problem.setAttribute("aria-live", "polite");
  input.setAttribute("aria-describedby", `${problem.id}`);
  if (input.type === "checkbox") input.checked = typed ?? field.default === true;
  else if (typed !== undefined) input.value = typed;
  label.append(" ", hint);
  wrapper.append(label, input, problem);
  return wrapper;
}

function inputFor(field) {
  if (field.kind === "choice") {
    const select = document.createElement("select");
    const none = field.default === undefined ? "choose…" : `default: ${show(field.default)}`;
    select.append(new Option(none, ""));
    for (const value of field.choices) select.append(new Option(show(value), JSON.stringify(value)));
    return select;
  }
  const input = document.createElement(field.kind === "extra" ? "textarea" : "input");
  input.spellcheck = false;
  input.autocomplete = "off";
  if (field.kind === "extra") {
    input.rows = 2;
    input.placeholder = '{"name": "value"}';
    return input;
  }
  input.type = { boolean: "checkbox", number: "number" }[field.kind] ?? "text";
  if (field.kind === "number") {
    input.step = field.integer ? "1" : "any";
    if (field.minimum !== undefined) input.min = String(field.minimum);
    if (field.maximum !== undefined) input.max = String(field.maximum);
  }
  if (field.default !== undefined && field.kind !== "boolean") {
    input.placeholder = field.kind === "list" ? field.default.map(show).join(", ") : show(field.default);
  }
  return input;
}

function hintFor(field) {
  const parts = [field.hint];
  if (field.default !== undefined && field.kind !== "extra") parts.push(`default ${show(field.default)}`);
  return parts.filter(Boolean).join(" · ");
}

function show(value) {
  return typeof value === "string" ? value : JSON.stringify(value);
}

// What a property's schema asks for, as the form needs it: a kind of field, its bounds, its
// default, its choices.
function describeField(property, root) {
  const schema = withoutNull(resolve(property, root), root);
  const field = { kind: "json", hint: "JSON or text", default: property.default ?? schema.default };
  const choices = schema.enum ?? ("const" in schema ? [schema.const] : null);
  if (choices) return { ...field, kind: "choice", choices, hint: "" };
  switch (schema.type) {
    case "boolean":
      return { ...field, kind: "boolean", hint: "" };
    case "integer":
    case "number":
      return { ...field, ...bounds(schema), kind: "number", integer: schema.type === "integer" };
    case "array": {
      const items = withoutNull(resolve(schema.items ?? {}, root), root).type;
      const kind = ["integer", "number", "boolean"].includes(items) ? items : "string";
      return { ...field, kind: "list", items: kind, hint: `comma-separated ${kind}s` };
    }
    case "string":
      return { ...field, kind: "text", hint: "" };
    default:
      return field;
  }
}

function bounds(schema) {
  const minimum = schema.minimum ?? schema.exclusiveMinimum;
  const maximum = schema.maximum ?? schema.exclusiveMaximum;
  const said = [schema.type];
  if (schema.minimum !== undefined) said.push(`≥ ${schema.minimum}`);
  if (schema.exclusiveMinimum !== undefined) said.push(`> ${schema.exclusiveMinimum}`);
  if (schema.maximum !== undefined) said.push(`≤ ${schema.maximum}`);
  if (schema.exclusiveMaximum !== undefined) said.push(`< ${schema.exclusiveMaximum}`);
  return { minimum, maximum, hint: said.join(" ") };
}

// `{"$ref": "#/$defs/Name"}` as the schema it names (pydantic writes models and enums so).
function resolve(schema, root) {
  let found = schema;
  for (let hops = 0; found?.$ref && hops < 10; hops += 1) {
    found = root.$defs?.[found.$ref.replace("#/$defs/", "")] ?? {};
  }
  return found ?? {};
}

// `X | None` (anyOf X, null) is X here: an empty field gives the default.
function withoutNull(schema, root) {
  const branches = (schema.anyOf ?? []).filter((branch) => branch.type !== "null");
  if (schema.anyOf && branches.length === 1) return resolve(branches[0], root);
  return schema;
}

function readField(input) {
  const kind = input.dataset.kind;
  if (kind === "boolean") return { [input.name]: input.checked };
  if (kind === "number" && input.validity.badInput) throw new Error("not a number");
  const raw = input.value.trim();
  if (raw === "") return {};
  switch (kind) {
    case "number":
      return { [input.name]: Number(raw) };
    case "choice":
      return { [input.name]: JSON.parse(raw) };
    case "text":
      return { [input.name]: input.value };
    case "list":
      return { [input.name]: readList(raw, input.dataset.items) };
    case "extra": {
      const extra = parseValue(raw);
      if (extra === null || typeof extra !== "object" || Array.isArray(extra)) {
        throw new Error("more arguments must be a JSON object");
      }
      return extra;
    }
    default:
      return { [input.name]: parseValue(raw) };
  }
}

function readList(raw, items) {
  const json = raw.startsWith("[") ? parseValue(raw) : null;
  if (Array.isArray(json)) return json;
  return raw.split(",").map((item) => readItem(item.trim(), items));
}

function readItem(text, kind) {
  if ((kind === "integer" || kind === "number") && text !== "" && !Number.isNaN(Number(text))) {
    return Number(text);
  }
  if (kind === "boolean" && (text === "true" || text === "false")) return text === "true";
  return text; // as typed: the gateway names an item of the wrong type
}

function parseValue(raw) {
  try {
    return JSON.parse(raw);
  } catch {
    return raw;
  }
}
