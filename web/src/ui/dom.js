// Building the page without HTML strings: everything shown comes from the doorbell, the
// broker or the bucket, so it is only ever set as text, never parsed as markup.

export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      element.addEventListener(name.slice(2), value);
    } else if (name === 'dataset') {
      for (const [key, data] of Object.entries(value)) {
        if (data !== undefined && data !== null) element.dataset[key] = String(data);
      }
    } else if (value === true) {
      element.setAttribute(name, '');
    } else {
      element.setAttribute(name, String(value));
    }
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(element, child);
    else element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function replace(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

/** A short message at the bottom of the screen; errors stay until tapped. */
export function toast(message, { bad = false, ms = 5000 } = {}) {
  const box = document.getElementById('toast');
  const item = h('div', { class: bad ? 'msg bad' : 'msg', role: bad ? 'alert' : 'status' }, message);
  item.addEventListener('click', () => item.remove());
  box.append(item);
  if (!bad) setTimeout(() => item.remove(), ms);
  while (box.children.length > 3) box.firstChild.remove();
}

/** Local date and time of a capture time in microseconds (BigInt). */
export function when(timeUs) {
  const ms = Number(BigInt(timeUs) / 1000n);
  const date = new Date(ms);
  if (Number.isNaN(date.getTime())) return 'an impossible time';
  return date.toLocaleString(undefined, {
    dateStyle: 'medium',
    timeStyle: 'medium',
  });
}

/** A message a person can act on, never a stack trace. */
export function explain(error) {
  if (error && typeof error.message === 'string' && error.message) return error.message;
  return String(error);
}

export function field(labelText, input) {
  const id = input.id || `f-${Math.random().toString(36).slice(2)}`;
  input.id = id;
  return [h('label', { for: id }, labelText), input];
}

/** Show characters that could disguise a name (controls, bidi overrides) as escapes. */
export function printable(text) {
  return String(text).replace(
    /[\p{Cc}\p{Cf}\u2028\u2029]/gu,
    (c) => `\\u{${c.codePointAt(0).toString(16)}}`,
  );
}
