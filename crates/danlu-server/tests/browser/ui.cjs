// Browser test of the web UI in headless Chromium, driven by playwright-core.
//
// Run by `tests/browser.rs` when DANLU_BROWSER_TESTS=1, against a server it started:
//   DANLU_URL     the server's base URL
//   DANLU_ROOT    its library root (holding `models/Stable-diffusion/tiny.safetensors`)
//   DANLU_TINY    the tiny checkpoint, to copy in and to drop into model analysis
//   DANLU_SHAPES  its shapes sidecar
//   DANLU_SHOTS   a folder for screenshots (kept out of the repository)
//   CHROMIUM      the browser (default /usr/bin/chromium)
// playwright-core is found through NODE_PATH.
'use strict';

const { chromium } = require('playwright-core');
const fs = require('fs');
const path = require('path');
const assert = require('assert');
const crypto = require('crypto');

const env = name => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};

async function main() {
  const url = env('DANLU_URL');
  const root = env('DANLU_ROOT');
  const tiny = env('DANLU_TINY');
  const shapes = env('DANLU_SHAPES');
  const shots = env('DANLU_SHOTS');
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox'],
  });
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const errors = [];
  page.on('pageerror', e => errors.push(String(e)));
  const shot = name => page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });

  // 0. The server hashes the library in the background after startup; once done, titles carry
  // A1111's short hash (the first 10 digits of the file's sha256).
  const short = crypto.createHash('sha256').update(fs.readFileSync(tiny)).digest('hex').slice(0, 10);
  const tinyTitle = `tiny.safetensors [${short}]`;
  for (let i = 0; ; i++) {
    const models = await (await fetch(`${url}/sdapi/v1/sd-models`)).json();
    if (models.every(m => m.sha256)) break;
    if (i > 1200) throw new Error(`never hashed: ${JSON.stringify(models)}`);
    await new Promise(r => setTimeout(r, 50));
  }

  // 1. The checkpoint dropdown lists the library's checkpoint.
  await page.goto(url);
  await page.waitForSelector(`#checkpoint option[value="${tinyTitle}"]`, { state: 'attached' });
  assert.strictEqual(await page.inputValue('#checkpoint'), tinyTitle);
  await page.waitForFunction(() => document.querySelector('#status').textContent === 'ready');
  const vaeOptions = await page.$$eval('#vae option', os => os.map(o => o.value));
  assert.deepStrictEqual(vaeOptions.slice(0, 2), ['Automatic', 'None']);
  await shot('1-start');

  // 2. A file added to the folder appears after pressing refresh.
  const ckDir = path.join(root, 'models', 'Stable-diffusion');
  fs.copyFileSync(tiny, path.join(ckDir, 'second.safetensors'));
  fs.copyFileSync(shapes, path.join(ckDir, 'second.shapes.json'));
  assert.strictEqual(await page.$('#checkpoint option[value^="second.safetensors"]'), null);
  await page.click('#refresh');
  // Listed at once; its title gains the hash once hashed (in the background or on loading).
  await page.waitForSelector('#checkpoint option[value^="second.safetensors"]', { state: 'attached' });

  // 3. Pick a checkpoint: the options call loads it, and the list shows its hashed title.
  const second = await page.$eval('#checkpoint option[value^="second.safetensors"]', o => o.value);
  await page.selectOption('#checkpoint', second);
  await page.waitForFunction(() => document.querySelector('#status').textContent === 'ready');
  assert.strictEqual(await page.inputValue('#checkpoint'), `second.safetensors [${short}]`);
  await page.selectOption('#checkpoint', tinyTitle);
  await page.waitForFunction(() => document.querySelector('#status').textContent === 'ready');
  assert.strictEqual(await page.inputValue('#checkpoint'), tinyTitle);

  // 4. Generate with Ctrl+Enter; the image and its parameters show.
  const t2i = '#tab-txt2img';
  await page.fill(`${t2i} .prompt`, 'a red house');
  await page.fill(`${t2i} .steps`, '2');
  await page.fill(`${t2i} .width`, '64');
  await page.fill(`${t2i} .height`, '64');
  await page.fill(`${t2i} .seed`, '77');
  await page.focus(`${t2i} .prompt`);
  await page.keyboard.press('Control+Enter');
  await page.waitForSelector(`${t2i} .gallery img`, { timeout: 120000 });
  const params = await page.textContent(`${t2i} .parameters`);
  assert.match(params, /^a red house\n/);
  assert.match(params, /Steps: 2/);
  assert.match(params, /Seed: 77/);
  assert.match(params, /Model: tiny/);
  assert.match(params, new RegExp(`Model hash: ${short}`));
  // Saved as A1111's UI saves: outputs/txt2img-images/DATE/NNNNN-SEED.png.
  const outDir = path.join(root, 'outputs', 'txt2img-images');
  const days = fs.readdirSync(outDir);
  assert.strictEqual(days.length, 1, days.join(' '));
  assert.ok(fs.existsSync(path.join(outDir, days[0], '00000-77.png')), fs.readdirSync(path.join(outDir, days[0])).join(' '));
  await shot('2-txt2img');

  // 5. Drop the generated PNG into PNG info, then send it to txt2img.
  await page.click('#tabs button[data-tab="pnginfo"]');
  await page.evaluate(async () => {
    const src = document.querySelector('#tab-txt2img .gallery img').src;
    const blob = await (await fetch(src)).blob();
    const dt = new DataTransfer();
    dt.items.add(new File([blob], 'made.png', { type: 'image/png' }));
    document.querySelector('#png-drop').dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
  });
  await page.waitForSelector('#png-fields tr');
  const fields = await page.$$eval('#png-fields tr', rows => Object.fromEntries(rows.map(r => [r.cells[0].textContent, r.cells[1].textContent])));
  assert.strictEqual(fields['Seed'], '77');
  assert.strictEqual(fields['Steps'], '2');
  await shot('3-pnginfo');
  await page.$eval(`${t2i} .prompt`, el => { el.value = ''; });
  await page.click('#png-send-txt2img');
  assert.strictEqual(await page.inputValue(`${t2i} .prompt`), 'a red house');
  assert.strictEqual(await page.inputValue(`${t2i} .seed`), '77');

  // 6a. Send the image to img2img, choose a mask (left half white: repainted), inpaint; the
  // mask's fields are in the parameters and the image is saved under img2img-images.
  await page.click('#tabs button[data-tab="txt2img"]');
  await page.click(`${t2i} .send-img2img`);
  const i2i = '#tab-img2img';
  await page.waitForSelector(`${i2i} .init-preview[src^="data:image/png"]`);
  const maskPng = await page.evaluate(() => {
    const c = document.createElement('canvas');
    c.width = 64; c.height = 64;
    const g = c.getContext('2d');
    g.fillStyle = '#000'; g.fillRect(0, 0, 64, 64);
    g.fillStyle = '#fff'; g.fillRect(0, 0, 32, 64);
    return c.toDataURL('image/png').split(',')[1];
  });
  await page.setInputFiles(`${i2i} .mask-file`, { name: 'mask.png', mimeType: 'image/png', buffer: Buffer.from(maskPng, 'base64') });
  await page.waitForSelector(`${i2i} .mask-settings`, { state: 'visible' });
  await page.fill(`${i2i} .steps`, '2');
  await page.fill(`${i2i} .denoising`, '0.5');
  await page.fill(`${i2i} .mask-blur`, '2');
  await page.click(`${i2i} .generate`);
  await page.waitForSelector(`${i2i} .gallery img`, { timeout: 120000 });
  const inpainted = await page.textContent(`${i2i} .parameters`);
  assert.match(inpainted, /Mask blur: 2/);
  assert.match(inpainted, /Denoising strength: 0.5/);
  const i2iDays = fs.readdirSync(path.join(root, 'outputs', 'img2img-images'));
  assert.strictEqual(i2iDays.length, 1);
  await shot('4a-inpaint');

  // 6. Choose a model file in model analysis: identified, then filed.
  await page.click('#tabs button[data-tab="models"]');
  const dropped = path.join(shots, 'analysed.safetensors');
  fs.copyFileSync(tiny, dropped);
  await page.setInputFiles('#model-file', dropped);
  await page.waitForSelector('#model-fields th');
  const model = await page.$$eval('#model-fields tr', rows => Object.fromEntries(rows.map(r => [r.cells[0].textContent, r.cells[1].textContent])));
  assert.strictEqual(model['kind'], 'checkpoint');
  assert.match(await page.textContent('#model-destination'), /models\/Stable-diffusion\/analysed\.safetensors/);
  await shot('4-analysis');
  await page.click('#model-place');
  await page.waitForFunction(() => /filed as/.test(document.querySelector('#model-placed').textContent));
  assert.ok(fs.existsSync(path.join(ckDir, 'analysed.safetensors')));
  await page.waitForSelector('#checkpoint option[value^="analysed.safetensors"]', { state: 'attached' });

  // 7. Library cards with filters.
  await page.click('#tabs button[data-tab="library"]');
  await page.waitForSelector('#lib-cards .card');
  assert.ok((await page.$$('#lib-cards .card')).length >= 3);
  const meta = await page.$$eval('#lib-cards .card .meta', ms => ms.map(m => m.textContent));
  assert.ok(meta.every(t => t.startsWith('checkpoint · ')), meta.join(' | '));
  await shot('5-library');
  await page.selectOption('#lib-kind', 'lora');
  await page.waitForFunction(() => document.querySelectorAll('#lib-cards .card').length === 0);
  await shot('6-library-lora');

  assert.deepStrictEqual(errors, [], 'no script errors in the page');
  await browser.close();
}

main().then(() => process.exit(0), e => {
  console.error(e);
  process.exit(1);
});
