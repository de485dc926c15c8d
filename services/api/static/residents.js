// CityWatch residents' page: per area, in plain words, in Khmer (default) or English.
// Reads /areas once a minute; small on purpose (slow connections, old phones).
"use strict";
(function () {
  // The update time spelt out (day, month name, year, 24-hour clock, the phone's own time
  // zone), not the browser's locale format: a browser without Khmer locale data printed
  // "12/4/2026, 2:26:33 PM" on the Khmer page, which reads as 12 April.
  const MONTHS = {
    km: ["មករា", "កុម្ភៈ", "មីនា", "មេសា", "ឧសភា", "មិថុនា", "កក្កដា", "សីហា", "កញ្ញា", "តុលា", "វិច្ឆិកា", "ធ្នូ"],
    en: ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"],
  };
  const KM_DIGITS = "០១២៣៤៥៦៧៨៩";
  // Khmer digits on the Khmer page, as the alerts' own Khmer texts write numbers
  // (services/alerts/texts.py): the time, and the sensor counts.
  function digits(text, lang) {
    return lang === "km" ? String(text).replace(/[0-9]/g, (c) => KM_DIGITS[+c]) : String(text);
  }
  function when(d, lang) {
    const two = (n) => String(n).padStart(2, "0");
    return digits(`${d.getDate()} ${MONTHS[lang][d.getMonth()]} ${d.getFullYear()}, ${two(d.getHours())}:${two(d.getMinutes())}`, lang);
  }
  const T = {
    km: {
      title: "ស្ថានភាពបរិស្ថាន ក្រុងព្រះសីហនុ",
      doc: "ស្ថានភាពបរិស្ថាន — CityWatch",
      switchTo: "English", switchLang: "en", skip: "រំលងទៅព័ត៌មាន",
      warnings: "ការព្រមាន", noWarnings: "គ្មានការព្រមានទេនាពេលនេះ។",
      whatToDo: "អ្វីដែលត្រូវធ្វើ៖ ", updated: "ធ្វើបច្ចុប្បន្នភាព៖ ", error: "មិនអាចទាញយកព័ត៌មានបានទេ។ សូមព្យាយាមម្តងទៀត។",
      openData: "ទិន្នន័យបើកចំហ (CSV)", sensors: "ឧបករណ៍ចាប់សញ្ញា", of: "ក្នុងចំណោម",
      kinds: { air: "គុណភាពខ្យល់", flood: "ស្ថានភាពទឹកជំនន់", water: "គុណភាពទឹក", drinking_water: "ទឹកផឹក", litter: "សំរាមនៅឆ្នេរ" },
      // What the water sensors measure (the area's type); "drinking water" (drinking_water)
      // only for devices registered as drinking-water points.
      waters: { sea: "ទឹកសមុទ្រ", estuary: "ទឹកមាត់ទន្លេ (ទឹកប្រៃលាយសាប)", river: "ទឹកទន្លេ និងស្ទឹង" },
      boomLitter: "សំរាមនៅរបាំងចាប់សំរាម",
      exercise: "សមយុទ្ធ — មិនមែនជាការព្រមានពិតទេ",
      exercisePage: "សមយុទ្ធ៖ ទំព័រនេះបង្ហាញទិន្នន័យក្លែងធ្វើ មិនមែនស្ថានភាពពិតទេ។",
      byAlert: "យោងតាមការព្រមានដែលកំពុងមាន",
      levels: {
        good: ["ល្អ", "ខ្យល់ស្អាត។ អាចធ្វើសកម្មភាពនៅខាងក្រៅបានធម្មតា។"],
        moderate: ["មធ្យម", "អ្នកដែលងាយរងផលប៉ះពាល់ខ្លាំង គួរកាត់បន្ថយការហាត់ប្រាណធ្ងន់ៗនៅខាងក្រៅ។"],
        unhealthy_sensitive: ["មិនល្អសម្រាប់ក្រុមងាយរងគ្រោះ", "កុមារ មនុស្សចាស់ ស្ត្រីមានផ្ទៃពោះ និងអ្នកមានជំងឺផ្លូវដង្ហើម គួរកាត់បន្ថយពេលនៅខាងក្រៅ។"],
        unhealthy: ["មិនល្អចំពោះសុខភាព", "គ្រប់គ្នាគួរកាត់បន្ថយសកម្មភាពនៅខាងក្រៅ ហើយពាក់ម៉ាស់ N95 ពេលចេញក្រៅ។"],
        very_unhealthy: ["មិនល្អខ្លាំង", "នៅក្នុងផ្ទះ បិទទ្វារ និងបង្អួច។ ជៀសវាងសកម្មភាពនៅខាងក្រៅ។"],
        hazardous: ["គ្រោះថ្នាក់", "នៅក្នុងផ្ទះ ហើយធ្វើតាមការណែនាំរបស់អាជ្ញាធរ។"],
        normal: ["ធម្មតា", "គ្មានហានិភ័យទឹកជំនន់ទេនាពេលនេះ។"],
        watch: ["តាមដាន", "កម្រិតទឹកកំពុងឡើង។ តាមដានព័ត៌មាន និងរៀបចំឯកសារសំខាន់ៗ។"],
        warning_flood: ["ព្រមាន", "ទឹកជំនន់អាចកើតឡើង។ លើកទ្រព្យសម្បត្តិឡើងខ្ពស់ ហើយត្រៀមខ្លួនជម្លៀស។"],
        danger: ["គ្រោះថ្នាក់", "ជម្លៀសទៅកន្លែងខ្ពស់ភ្លាម។ កុំដើរ ឬបើកបរកាត់ទឹកជំនន់។"],
        ok: ["ល្អ", "គ្មានការព្រមានអំពីទឹកនេះទេ។"],
        advisory: ["ប្រុងប្រយ័ត្ន", "ទឹកល្អក់។ ជៀសវាងការហែលទឹកនៅទីនេះ ជាពិសេសក្រោយភ្លៀង។"],
        warning_water: ["ព្រមាន", "ទឹកកខ្វក់ ឬល្អក់ខ្លាំង។ កុំហែលទឹក ឬនេសាទនៅទីនេះ ហើយទុកកុមារឱ្យនៅឆ្ងាយពីទឹក។"],
        advisory_drinking: ["ប្រុងប្រយ័ត្ន", "ទឹកផឹកល្អក់បន្តិច។ ប្រសិនបើទឹករ៉ូប៊ីណេល្អក់ សូមដាំទឹកឱ្យពុះមុនពេលផឹក។"],
        warning_drinking: ["ព្រមាន", "ទឹកផឹកល្អក់។ សូមដាំទឹកឱ្យពុះមុនពេលផឹក រហូតដល់មានដំណឹងថ្មី។"],
        low: ["តិច", "ឆ្នេរស្អាត។"],
        moderate_litter: ["មធ្យម", "សំរាមកំពុងកើនឡើង។ សូមយកសំរាមរបស់អ្នកទៅជាមួយ។"],
        low_boom_litter: ["តិច", "សំរាមតិចតួចបានមកដល់របាំងចាប់សំរាម។"],
        moderate_boom_litter: ["មធ្យម", "សំរាមកំពុងកើនឡើងនៅរបាំងចាប់សំរាម។ កុំបោះសំរាមចូលទន្លេ ឬសមុទ្រ។"],
        high: ["ច្រើន", "សំរាមច្រើន។ ជៀសវាងតំបន់នោះ ហើយកុំប៉ះវត្ថុមុតស្រួច។"],
        no_data: ["គ្មានទិន្នន័យ", "ឧបករណ៍មិនបានផ្ញើទិន្នន័យថ្មីៗទេ។"],
      },
      alertAdvice: {
        air: "នៅក្នុងផ្ទះ បិទបង្អួច ហើយពាក់ម៉ាស់ពេលចេញក្រៅ។",
        flood: "ចាកចេញពីតំបន់ទាប ហើយធ្វើតាមការណែនាំរបស់អាជ្ញាធរ។ កុំឆ្លងកាត់ទឹកហូរ។",
        water: "កុំហែលទឹក ឬនេសាទនៅក្នុងទឹកនោះ រហូតដល់មានការជូនដំណឹងថ្មី។",
        drinking_water: "សូមដាំទឹកឱ្យពុះមុនពេលផឹក រហូតដល់មានដំណឹងថ្មី។",
        litter: "ជៀសវាងឆ្នេរនោះ។ កុំប៉ះសំរាម។",
      },
      areas: { mittapheap: "ខណ្ឌមិត្តភាព", "prey-nob": "ស្រុកព្រៃនប់", "stueng-hav": "ស្រុកស្ទឹងហាវ", "kampong-seila": "ស្រុកកំពង់សីលា" },
    },
    en: {
      title: "Sihanoukville environment today",
      doc: "Environment today — CityWatch",
      switchTo: "ភាសាខ្មែរ", switchLang: "km", skip: "Skip to the information",
      warnings: "Warnings", noWarnings: "No warnings right now.",
      whatToDo: "What to do: ", updated: "Updated: ", error: "Could not load the information. Please try again.",
      openData: "Open data (CSV)", sensors: "sensors", of: "of",
      kinds: { air: "Air quality", flood: "Flooding", water: "Water quality", drinking_water: "Drinking water", litter: "Beach litter" },
      waters: { sea: "Sea water", estuary: "Estuary water (river meets sea)", river: "River water" },
      boomLitter: "Litter at the boom",
      exercise: "EXERCISE — not a real alert",
      exercisePage: "EXERCISE: this page shows simulated data, not the real situation.",
      byAlert: "from an active alert",
      levels: {
        good: ["Good", "The air is clean. Outdoor activity as usual."],
        moderate: ["Moderate", "People who are very sensitive should avoid hard exercise outdoors."],
        unhealthy_sensitive: ["Unhealthy for sensitive groups", "Children, older people, pregnant women and people with breathing problems should spend less time outdoors."],
        unhealthy: ["Unhealthy", "Everyone should cut outdoor activity and wear an N95 mask outside."],
        very_unhealthy: ["Very unhealthy", "Stay indoors with doors and windows closed. Avoid outdoor activity."],
        hazardous: ["Hazardous", "Stay indoors and follow the authorities' instructions."],
        normal: ["Normal", "No flood risk right now."],
        watch: ["Watch", "Water is rising. Follow the news and keep important papers ready."],
        warning_flood: ["Warning", "Flooding is likely. Move belongings up high and be ready to leave."],
        danger: ["Danger", "Go to high ground now. Do not walk or drive through flood water."],
        ok: ["Good", "No warning for this water."],
        advisory: ["Take care", "The water is murky. Avoid swimming here, especially after rain."],
        warning_water: ["Warning", "Polluted or very murky water. Do not swim or fish here; keep children out of the water."],
        advisory_drinking: ["Take care", "The drinking water is slightly cloudy. If tap water looks cloudy, boil it before drinking."],
        warning_drinking: ["Warning", "The drinking water is cloudy. Boil water before drinking until further notice."],
        low: ["Low", "The beach is clean."],
        moderate_litter: ["Moderate", "Litter is building up. Please take your rubbish with you."],
        low_boom_litter: ["Low", "Little litter has reached the boom."],
        moderate_boom_litter: ["Moderate", "Litter is building up at the boom. Do not throw rubbish into rivers or the sea."],
        high: ["High", "A lot of litter. Avoid the area and do not touch sharp objects."],
        no_data: ["No data", "The sensors have not reported recently."],
      },
      alertAdvice: {
        air: "Stay indoors, close windows, wear a mask outside.",
        flood: "Leave low-lying places and follow the authorities. Do not cross moving water.",
        water: "Do not swim or fish in that water until further notice.",
        drinking_water: "Boil water before drinking until further notice.",
        litter: "Avoid that beach. Do not touch the litter.",
      },
      areas: {},
    },
  };
  const ORDER = ["flood", "air", "drinking_water", "water", "litter"];
  const $ = (s) => document.getElementById(s);
  let lang = "km";
  let data = null;
  try { lang = localStorage.getItem("citywatch-lang") === "en" ? "en" : "km"; } catch (e) { /* private mode */ }
  // A shared link may name its language (`/residents?lang=en`); it wins over the stored choice.
  const asked = new URLSearchParams(location.search).get("lang");
  if (asked === "en" || asked === "km") lang = asked;

  // Litter is counted by beach stations on beaches and by booms across rivers, drains and
  // the harbour elsewhere: a page that said "The beach is clean" at an estuary boom the
  // crews were told to empty contradicted itself.
  function levelKey(kind, level, areaType) {
    if (kind === "litter" && areaType !== "beach" && (level === "low" || level === "moderate")) return level + "_boom_litter";
    if (kind === "drinking_water" && (level === "advisory" || level === "warning")) return level + "_drinking";
    if (level === "warning") return kind === "flood" ? "warning_flood" : "warning_water";
    if (level === "moderate" && kind === "litter") return "moderate_litter";
    return level;
  }
  function h(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }
  function render() {
    const t = T[lang];
    document.documentElement.lang = lang;
    document.title = t.doc;
    $("title").textContent = t.title;
    $("skip").textContent = t.skip;
    const btn = $("lang");
    btn.textContent = t.switchTo;
    btn.lang = t.switchLang;
    btn.setAttribute("aria-label", lang === "km" ? "Read this page in English" : "អានទំព័រនេះជាភាសាខ្មែរ");
    $("warnings-h").textContent = t.warnings;
    $("open-data").textContent = t.openData;
    if (!data) return;
    $("updated").textContent = t.updated + when(new Date(data.generated_at), lang);
    const ex = $("exercise");
    ex.hidden = !(data.simulated || data.exercise);
    ex.textContent = t.exercisePage;
    const list = $("warning-list");
    list.textContent = "";
    const areas = data.areas.filter((a) => Object.keys(a.kinds).length);
    for (const a of areas) {
      // One line per rule and area, however many sensors raised it (four air sensors in
      // one town made four near-identical AQI warnings).
      const seen = new Set();
      for (const al of a.alerts) {
        const title = lang === "km" ? al.title_km : al.title_en;
        const key = al.kind + "|" + (al.rule_id || title);
        if (seen.has(key)) continue;
        seen.add(key);
        const li = h("li");
        // Boil-water advice only for an alert from a registered drinking-water point.
        const section = al.kind === "water" && al.drinking_water ? "drinking_water" : al.kind;
        li.dataset.kind = section;
        li.dataset.status = al.status;
        if (al.status !== "Actual") li.appendChild(h("span", t.exercise, "exercise-tag"));
        li.appendChild(h("strong", title + " — " + areaName(a)));
        li.appendChild(h("span", " " + t.whatToDo + (t.alertAdvice[section] || ""), "advice"));
        list.appendChild(li);
      }
    }
    if (!list.childNodes.length) list.appendChild(h("li", t.noWarnings));
    $("warnings").className = list.querySelector("strong") ? "" : "none";
    const box = $("areas");
    box.textContent = "";
    areas.sort((x, y) => y.alerts.length - x.alerts.length);
    for (const a of areas) {
      const sec = h("section", undefined, "area");
      sec.dataset.area = a.id;
      const hid = "area-" + a.id;
      const h2 = h("h2", areaName(a));
      h2.id = hid;
      sec.setAttribute("aria-labelledby", hid);
      sec.appendChild(h2);
      const dl = h("dl");
      for (const kind of ORDER) {
        const k = a.kinds[kind];
        if (!k) continue;
        const [word, advice] = t.levels[levelKey(kind, k.level, a.type)] || [k.level, ""];
        dl.appendChild(h("dt", kindLabel(t, kind, a)));
        const dd = h("dd");
        dd.dataset.kind = kind;
        dd.dataset.level = k.level;
        dd.appendChild(h("span", word, "badge lv-" + k.level));
        dd.dataset.byAlert = k.by_alert ? "1" : "0";
        dd.appendChild(h("span", " (" + (k.by_alert ? t.byAlert + "; " : "") + digits(k.online, lang) + " " + t.of + " " + digits(k.devices, lang) + " " + t.sensors + ")"));
        dd.appendChild(h("span", advice, "advice"));
        dl.appendChild(dd);
      }
      sec.appendChild(dl);
      box.appendChild(sec);
    }
  }
  function kindLabel(t, kind, a) {
    if (kind === "water" && t.waters[a.water]) return t.waters[a.water];
    if (kind === "litter" && a.type !== "beach") return t.boomLitter;
    return t.kinds[kind];
  }
  function areaName(a) {
    return (lang === "km" && (a.name_km || T.km.areas[a.id])) || a.name;
  }
  async function load() {
    try {
      const r = await fetch("/areas", { cache: "no-store" });
      if (!r.ok) throw new Error("HTTP " + r.status);
      data = await r.json();
      document.body.dataset.loaded = "1";
    } catch (e) {
      $("updated").textContent = T[lang].error;
    }
    render();
  }
  $("lang").addEventListener("click", () => {
    lang = lang === "km" ? "en" : "km";
    try { localStorage.setItem("citywatch-lang", lang); } catch (e) { /* private mode */ }
    render();
  });
  render();
  load();
  setInterval(load, 60000);
})();
