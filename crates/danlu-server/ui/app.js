// danlu web UI: plain JavaScript over the same API that A1111 clients use.
'use strict';

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

async function api(method, path, body, headers = {}) {
  const init = { method, headers: { ...headers } };
  if (body instanceof Blob || body instanceof ArrayBuffer) {
    init.body = body;
  } else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers['Content-Type'] = 'application/json';
  }
  const r = await fetch(path, init);
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = text; }
  if (!r.ok) {
    let msg = `${r.status}`;
    if (data && typeof data.detail === 'string') msg = data.detail;
    else if (data && Array.isArray(data.detail)) msg = data.detail.map(d => d.msg).join('; ');
    else if (typeof data === 'string' && data) msg = data;
    throw new Error(msg);
  }
  return data;
}

function setStatus(text) { $('#status').textContent = text; }

// ---- tabs -------------------------------------------------------------------------------
function showTab(name) {
  $$('#tabs button').forEach(b => b.classList.toggle('active', b.dataset.tab === name));
  $$('.tab').forEach(t => t.classList.toggle('active', t.id === `tab-${name}`));
  if (name === 'library') loadLibrary();
}
$$('#tabs button').forEach(b => b.addEventListener('click', () => showTab(b.dataset.tab)));

// ---- checkpoint and VAE -------------------------------------------------------------------
let options = {};

async function loadModels() {
  const [models, vaes, opts] = await Promise.all([
    api('GET', '/sdapi/v1/sd-models'),
    api('GET', '/sdapi/v1/sd-vae'),
    api('GET', '/sdapi/v1/options'),
  ]);
  options = opts;
  fillCheckpoints(models, opts);
  const vae = $('#vae');
  vae.innerHTML = '';
  for (const name of ['Automatic', 'None', ...vaes.map(v => v.model_name)]) {
    const o = document.createElement('option');
    o.value = name; o.textContent = name;
    vae.appendChild(o);
  }
  vae.value = opts.sd_vae || 'Automatic';
  await showVaeChoice();
  await loadStatus();
}

// Titles gain their `[hash]` once the server has hashed the file (in the background, or when
// the checkpoint is loaded), so the list is read again after a checkpoint is chosen.
async function reloadCheckpoints() {
  const [models, opts] = await Promise.all([
    api('GET', '/sdapi/v1/sd-models'),
    api('GET', '/sdapi/v1/options'),
  ]);
  options = opts;
  fillCheckpoints(models, opts);
}

function fillCheckpoints(models, opts) {
  const ck = $('#checkpoint');
  ck.innerHTML = '';
  for (const m of models) {
    const o = document.createElement('option');
    o.value = m.title; o.textContent = m.title;
    ck.appendChild(o);
  }
  if (models.length === 0) {
    const o = document.createElement('option');
    o.value = ''; o.textContent = '(no checkpoint)';
    ck.appendChild(o);
  }
  if (opts.sd_model_checkpoint) ck.value = opts.sd_model_checkpoint;
}

async function showVaeChoice() {
  const ck = $('#checkpoint').value;
  const out = $('#vae-auto');
  if (!ck) { out.textContent = ''; return; }
  try {
    const vae = $('#vae').value;
    const r = await api('GET', `/danlu/v1/vae?checkpoint=${encodeURIComponent(ck)}&vae=${encodeURIComponent(vae)}`);
    if (vae === 'None') {
      out.textContent = 'uses the VAE baked into the checkpoint';
    } else {
      const file = r.vae ? r.vae.split(/[\\/]/).pop() : (r.choice === 'baked' ? 'the baked-in VAE' : 'no VAE');
      out.textContent = `${vae === 'Automatic' ? 'Automatic picks' : 'uses'} ${file}${r.refused ? ' — ' + r.refused : ''}`;
    }
    out.title = r.reason || '';
  } catch (e) {
    out.textContent = e.message;
  }
}

async function setOption(key, value) {
  setStatus(key === 'sd_model_checkpoint' ? 'loading checkpoint…' : 'applying…');
  try {
    await api('POST', '/sdapi/v1/options', { [key]: value });
    options[key] = value;
    if (key === 'sd_model_checkpoint') await reloadCheckpoints();
    setStatus('ready');
  } catch (e) {
    setStatus(`error: ${e.message}`);
  }
  await showVaeChoice();
}

$('#checkpoint').addEventListener('change', e => setOption('sd_model_checkpoint', e.target.value));
$('#vae').addEventListener('change', e => setOption('sd_vae', e.target.value));
$('#refresh').addEventListener('click', async () => {
  setStatus('refreshing…');
  try {
    await api('POST', '/sdapi/v1/refresh-checkpoints', {});
    await loadModels();
    setStatus('refreshed');
    if ($('#tab-library').classList.contains('active')) loadLibrary();
  } catch (e) { setStatus(`error: ${e.message}`); }
});

async function loadStatus() {
  const s = await api('GET', '/danlu/v1/status');
  const hint = $('#hint');
  hint.hidden = !s.hint;
  hint.textContent = s.hint || '';
  if (!$('#status').textContent) setStatus(`${s.models} files in ${s.root}`);
}

// ---- txt2img / img2img --------------------------------------------------------------------
const forms = {};
let samplers = [];
let schedulers = [];

function buildForm(section) {
  const mode = section.dataset.mode;
  section.appendChild($('#gen-template').content.cloneNode(true));
  const f = {
    mode, root: section, initImage: null, mask: null, lastSeed: null,
    el: name => $(`.${name}`, section),
  };
  if (mode === 'img2img') $('.init', section).hidden = false;
  $('.generate', section).addEventListener('click', () => generate(f));
  $('.interrupt', section).addEventListener('click', () => api('POST', '/sdapi/v1/interrupt', {}));
  $('.skip', section).addEventListener('click', () => api('POST', '/sdapi/v1/skip', {}));
  $('.seed-random', section).addEventListener('click', e => { e.preventDefault(); f.el('seed').value = -1; });
  $('.seed-reuse', section).addEventListener('click', e => {
    e.preventDefault();
    if (f.lastSeed !== null) f.el('seed').value = f.lastSeed;
  });
  $('.send-txt2img', section).addEventListener('click', () => sendTo('txt2img', f.selectedImage));
  $('.send-img2img', section).addEventListener('click', () => sendTo('img2img', f.selectedImage));
  if (mode === 'img2img') {
    dropZone($('.init-drop', section), $('.init-file', section), file => setInitImage(f, file));
    dropZone($('.mask-drop', section), $('.mask-file', section), file => setMask(f, file));
    $('.mask-clear', section).addEventListener('click', e => { e.preventDefault(); setMask(f, null); });
  }
  forms[mode] = f;
}

function fillSelects() {
  for (const f of Object.values(forms)) {
    const s = f.el('sampler');
    s.innerHTML = samplers.map(x => `<option>${x.name}</option>`).join('');
    s.value = 'Euler a';
    const sch = f.el('scheduler');
    sch.innerHTML = schedulers.map(x => `<option value="${x.label}">${x.label}</option>`).join('');
  }
}

async function setInitImage(f, blob) {
  f.initImage = await blobToBase64(blob);
  const img = $('.init-preview', f.root);
  img.src = `data:image/png;base64,${f.initImage}`;
  img.hidden = false;
  img.onload = () => { f.el('width').value = img.naturalWidth; f.el('height').value = img.naturalHeight; };
}

// An inpainting mask (A1111 img2img `mask`): white is repainted, black kept; "Inpaint area"
// is the whole picture or only the masked part (`inpaint_full_res`).
async function setMask(f, blob) {
  f.mask = blob ? await blobToBase64(blob) : null;
  const img = $('.mask-preview', f.root);
  img.hidden = !f.mask;
  if (f.mask) img.src = `data:image/png;base64,${f.mask}`; else img.removeAttribute('src');
  $('.mask-settings', f.root).hidden = !f.mask;
  $('.mask-clear', f.root).hidden = !f.mask;
}

function blobToBase64(blob) {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(String(r.result).split(',', 2)[1]);
    r.onerror = reject;
    r.readAsDataURL(blob);
  });
}

function requestOf(f) {
  const num = name => Number(f.el(name).value);
  const body = {
    prompt: f.el('prompt').value,
    negative_prompt: f.el('negative').value,
    sampler_name: f.el('sampler').value,
    scheduler: f.el('scheduler').value,
    steps: num('steps'),
    cfg_scale: num('cfg'),
    width: num('width'),
    height: num('height'),
    n_iter: num('n-iter'),
    batch_size: num('batch'),
    seed: num('seed'),
    force_task_id: `ui-${Date.now()}`,
    // A1111's UI saves every image to outputs/ (its API does not unless asked).
    save_images: true,
  };
  if (f.mode === 'img2img') {
    body.init_images = f.initImage ? [f.initImage] : [];
    body.denoising_strength = num('denoising');
    body.resize_mode = num('resize-mode');
    if (f.mask) {
      body.mask = f.mask;
      body.mask_blur = num('mask-blur');
      body.inpainting_mask_invert = num('mask-invert');
      body.inpainting_fill = num('inpainting-fill');
      body.inpaint_full_res = num('inpaint-area') === 1;
      body.inpaint_full_res_padding = num('inpaint-padding');
    }
  }
  return body;
}

let busy = false;

async function generate(f) {
  if (busy) return;
  if (f.mode === 'img2img' && !f.initImage) { showError(f, 'choose an init image first'); return; }
  busy = true;
  const gen = f.el('generate');
  gen.disabled = true; f.el('interrupt').disabled = false; f.el('skip').disabled = false;
  showError(f, null);
  const bar = $('.bar', f.root);
  const text = $('.progress-text', f.root);
  const live = f.el('live');
  bar.style.width = '0%';
  const body = requestOf(f);
  let polling = true;
  const timer = setInterval(async () => {
    try {
      const p = await api('GET', '/sdapi/v1/progress');
      if (!polling) return;
      bar.style.width = `${Math.round(p.progress * 100)}%`;
      const q = await api('GET', '/danlu/v1/queue');
      if (!polling) return;
      const me = q.jobs.find(j => j.task === body.force_task_id);
      if (me && me.position > 0) {
        text.textContent = `waiting: ${me.position} job(s) ahead`;
      } else if (p.state.job_count > 0) {
        text.textContent = `${p.textinfo || ''} · step ${p.state.sampling_step}/${p.state.sampling_steps}` +
          (p.eta_relative > 0 ? ` · ETA ${p.eta_relative.toFixed(1)} s` : '');
      }
      if (p.current_image) { live.src = `data:image/png;base64,${p.current_image}`; live.hidden = false; }
    } catch (_) { /* the next poll will tell */ }
  }, 400);
  try {
    const r = await api('POST', `/sdapi/v1/${f.mode}`, body);
    polling = false;
    clearInterval(timer);
    const info = JSON.parse(r.info);
    showImages(f, r.images, info);
    if (info.all_seeds && info.all_seeds.length) f.lastSeed = info.all_seeds[0];
    text.textContent = info.interrupted ? `interrupted: ${r.images.length} image(s)` : `done: ${r.images.length} image(s)`;
    bar.style.width = '100%';
  } catch (e) {
    showError(f, e.message);
    text.textContent = '';
  } finally {
    polling = false;
    clearInterval(timer);
    live.hidden = true;
    busy = false;
    gen.disabled = false; f.el('interrupt').disabled = true; f.el('skip').disabled = true;
  }
}

function showError(f, msg) {
  const el = f.el('error');
  el.hidden = !msg;
  el.textContent = msg || '';
}

function showImages(f, images, info) {
  const gallery = f.el('gallery');
  gallery.innerHTML = '';
  images.forEach((b64, i) => {
    const img = document.createElement('img');
    img.src = `data:image/png;base64,${b64}`;
    img.alt = `image ${i + 1}`;
    img.addEventListener('click', () => select(f, b64, info.infotexts[i], img));
    gallery.appendChild(img);
  });
  if (images.length) select(f, images[0], info.infotexts[0], gallery.firstChild);
}

function select(f, b64, infotext, imgEl) {
  $$('.gallery img', f.root).forEach(i => i.classList.toggle('chosen', i === imgEl));
  f.selectedImage = b64;
  f.selectedInfo = infotext;
  $('.selected', f.root).hidden = false;
  $('.selected-image', f.root).src = `data:image/png;base64,${b64}`;
  $('.parameters', f.root).textContent = infotext || '';
}

// Fills a form from an image's parameters (parsed by the server) and switches to it; img2img
// also takes the image as its init image.
async function sendTo(mode, imageB64) {
  if (!imageB64) return;
  const f = forms[mode];
  const r = await api('POST', '/sdapi/v1/png-info', { image: imageB64 });
  if (mode === 'img2img') {
    await setInitImage(f, await (await fetch(`data:image/png;base64,${imageB64}`)).blob());
  }
  applyParams(f, r.parameters || {});
  showTab(mode);
}

function applyParams(f, p) {
  const set = (name, v) => { if (v !== undefined && v !== null) f.el(name).value = v; };
  set('prompt', p['Prompt']);
  set('negative', p['Negative prompt']);
  set('steps', p['Steps']);
  set('cfg', p['CFG scale']);
  set('seed', p['Seed']);
  set('width', p['Size-1']);
  set('height', p['Size-2']);
  if (p['Sampler']) {
    const name = samplers.find(s => s.name === p['Sampler'] || s.aliases.includes(p['Sampler']));
    if (name) f.el('sampler').value = name.name;
  }
  if (p['Schedule type']) f.el('scheduler').value = p['Schedule type'];
  if (p['Denoising strength'] && f.mode === 'img2img') set('denoising', p['Denoising strength']);
}

document.addEventListener('keydown', e => {
  if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
    const active = $('.tab.active');
    const f = active && forms[active.dataset.mode];
    if (f) { e.preventDefault(); generate(f); }
  }
});

// ---- drop zones ---------------------------------------------------------------------------
function dropZone(zone, input, onFile) {
  zone.addEventListener('dragover', e => { e.preventDefault(); zone.classList.add('over'); });
  zone.addEventListener('dragleave', () => zone.classList.remove('over'));
  zone.addEventListener('drop', e => {
    e.preventDefault();
    zone.classList.remove('over');
    const file = e.dataTransfer.files[0];
    if (file) onFile(file);
  });
  input.addEventListener('change', () => { if (input.files[0]) onFile(input.files[0]); });
}

// ---- PNG info -------------------------------------------------------------------------------
let pngParams = null;
let pngImage = null;

dropZone($('#png-drop'), $('#png-file'), async file => {
  try {
    const r = await api('POST', '/danlu/v1/png-info', file);
    pngImage = await blobToBase64(file);
    const sd = await api('POST', '/sdapi/v1/png-info', { image: pngImage });
    pngParams = sd.parameters;
    $('#png-result').hidden = false;
    $('#png-image').src = URL.createObjectURL(file);
    const rows = Object.keys(sd.parameters).map(() => '<tr><th></th><td></td></tr>');
    const table = $('#png-fields');
    table.innerHTML = rows.join('');
    Object.entries(sd.parameters).forEach(([k, v], i) => {
      table.rows[i].cells[0].textContent = k;
      table.rows[i].cells[1].textContent = String(v);
    });
    $('#png-raw').textContent = r.infotext || `no generation parameters (${r.params.source})`;
    const missing = $('#png-missing');
    missing.innerHTML = '';
    for (const m of r.missing) {
      const p = document.createElement('p');
      p.className = 'missing';
      p.textContent = `missing ${m.kind}: ${m.name}${m.hash ? ' [' + m.hash + ']' : ''}`;
      missing.appendChild(p);
    }
  } catch (e) {
    $('#png-result').hidden = false;
    $('#png-raw').textContent = `error: ${e.message}`;
  }
});
$('#png-send-txt2img').addEventListener('click', () => { if (pngParams) { applyParams(forms.txt2img, pngParams); showTab('txt2img'); } });
$('#png-send-img2img').addEventListener('click', async () => {
  if (!pngParams) return;
  applyParams(forms.img2img, pngParams);
  await setInitImage(forms.img2img, await (await fetch(`data:image/png;base64,${pngImage}`)).blob());
  showTab('img2img');
});

// ---- model analysis ------------------------------------------------------------------------
let upload = null;

dropZone($('#model-drop'), $('#model-file'), async file => {
  $('#model-result').hidden = false;
  $('#model-placed').textContent = '';
  $('#model-fields').innerHTML = '<tr><td>reading…</td></tr>';
  try {
    const r = await api('POST', '/danlu/v1/inspect', file, { 'X-File-Name': encodeURIComponent(file.name) });
    upload = r.upload;
    const rep = r.report;
    const fields = [
      ['file', r.file_name], ['kind', rep.kind], ['base', rep.base], ['variant', rep.variant],
      ['format', rep.format], ['subformat', rep.subformat], ['dtype', rep.dtype],
      ['parameters', rep.parameters], ['error', rep.error],
      ['warnings', (rep.warnings || []).join('; ')],
    ].filter(([, v]) => v !== undefined && v !== null && v !== '');
    const table = $('#model-fields');
    table.innerHTML = fields.map(() => '<tr><th></th><td></td></tr>').join('');
    fields.forEach(([k, v], i) => { table.rows[i].cells[0].textContent = k; table.rows[i].cells[1].textContent = String(v); });
    $('#model-destination').textContent = r.destination
      ? `belongs in ${r.destination}${r.exists ? ' (a file of that name is already there)' : ''}`
      : 'danlu does not know where this file goes';
    $('#model-place').disabled = !r.destination || r.exists;
  } catch (e) {
    $('#model-fields').innerHTML = '';
    $('#model-destination').textContent = `error: ${e.message}`;
    $('#model-place').disabled = true;
  }
});
$('#model-place').addEventListener('click', async () => {
  if (!upload) return;
  try {
    const r = await api('POST', `/danlu/v1/uploads/${upload}/place`, {});
    $('#model-placed').textContent = `filed as ${r.path}`;
    $('#model-place').disabled = true;
    await loadModels();
  } catch (e) {
    $('#model-placed').textContent = `error: ${e.message}`;
  }
});

// ---- library --------------------------------------------------------------------------------
async function loadLibrary() {
  const q = new URLSearchParams();
  for (const [k, id] of [['kind', 'lib-kind'], ['base', 'lib-base'], ['category', 'lib-category'], ['q', 'lib-q'], ['sort', 'lib-sort']]) {
    const v = $(`#${id}`).value;
    if (v) q.set(k, v);
  }
  const cards = $('#lib-cards');
  try {
    const r = await api('GET', `/danlu/v1/library?${q}`);
    cards.innerHTML = '';
    if (r.models.length === 0) {
      const p = document.createElement('p');
      p.className = 'muted';
      p.textContent = r.total === 0 ? ($('#hint').textContent || 'the library is empty') : 'no model matches';
      cards.appendChild(p);
    }
    for (const m of r.models) cards.appendChild(card(m));
  } catch (e) {
    cards.textContent = `error: ${e.message}`;
  }
}

function card(m) {
  const div = document.createElement('div');
  // The library record carries its identity's fields (kind, base, ...) at the top level.
  const kind = m.kind || 'unknown';
  const base = m.base || 'unknown';
  div.className = `card kind-${kind}`;
  if (m.has_preview) {
    const img = document.createElement('img');
    img.loading = 'lazy';
    img.src = `/danlu/v1/preview?path=${encodeURIComponent(m.path)}`;
    img.alt = m.name;
    div.appendChild(img);
  } else {
    const ph = document.createElement('div');
    ph.className = 'placeholder';
    ph.textContent = kind;
    div.appendChild(ph);
  }
  const name = document.createElement('div');
  name.className = 'name';
  name.textContent = m.name;
  div.appendChild(name);
  const meta = document.createElement('div');
  meta.className = 'meta';
  meta.textContent = [kind, base, humanSize(m.size), ...(m.categories || [])].join(' · ');
  div.appendChild(meta);
  div.title = m.path;
  div.addEventListener('click', () => useModel(m, kind));
  return div;
}

function useModel(m, kind) {
  const prompt = forms.txt2img.el('prompt');
  if (kind === 'lora') {
    prompt.value = `${prompt.value}${prompt.value ? ', ' : ''}<lora:${m.name}:1>`;
    showTab('txt2img');
  } else if (kind === 'embedding') {
    prompt.value = `${prompt.value}${prompt.value ? ', ' : ''}${m.name}`;
    showTab('txt2img');
  } else if (kind === 'checkpoint' && m.title) {
    $('#checkpoint').value = m.title;
    setOption('sd_model_checkpoint', m.title);
  }
}

function humanSize(n) {
  if (n < 1e3) return `${n} B`;
  if (n < 1e6) return `${(n / 1e3).toFixed(1)} KB`;
  if (n < 1e9) return `${(n / 1e6).toFixed(1)} MB`;
  return `${(n / 1e9).toFixed(2)} GB`;
}

for (const id of ['lib-kind', 'lib-base', 'lib-category', 'lib-sort']) $(`#${id}`).addEventListener('change', loadLibrary);
$('#lib-q').addEventListener('input', () => { clearTimeout(loadLibrary.t); loadLibrary.t = setTimeout(loadLibrary, 250); });

// ---- start ----------------------------------------------------------------------------------
(async () => {
  buildForm($('#tab-txt2img'));
  buildForm($('#tab-img2img'));
  try {
    [samplers, schedulers] = await Promise.all([
      api('GET', '/sdapi/v1/samplers'), api('GET', '/sdapi/v1/schedulers'),
    ]);
    fillSelects();
    await loadModels();
    setStatus('ready');
  } catch (e) {
    setStatus(`error: ${e.message}`);
  }
})();
