"""Synthetic clinical notes with their identifiers and clinical values annotated, for the PHI scrubber.

Written by us: templates x people from many languages and cultures x identifier formats from many
countries. Every note is built piece by piece, so the span of each identifier and each clinical
value is known exactly. `{slot}` in a template is an identifier; `<<...>>` in a clinical sentence
is a value that must survive. The table is deterministic (a fixed seed).

Used by tests/serve/test_phi.py (the goals) and bench/phi.py (the figures).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

# (given, surname, sex, culture): titles, hyphens, apostrophes, particles, accents, ordinary words
PEOPLE = [
    ("Oliver", "Bennett", "M", "English"), ("Harriet", "Pembroke", "F", "English"),
    ("Siobhan", "O'Sullivan", "F", "Irish"), ("Padraig", "Gallagher", "M", "Irish"),
    ("Hamish", "MacLeod", "M", "Scottish"), ("Eilidh", "Drummond", "F", "Scottish"),
    ("Rhys", "Llewelyn", "M", "Welsh"), ("Angharad", "Pritchard", "F", "Welsh"),
    ("José Luis", "Hernández", "M", "Spanish"), ("María del Carmen", "Ruiz", "F", "Spanish"),
    ("Ximena", "Villarreal", "F", "Mexican"), ("Joaquín", "Echeverría", "M", "Chilean"),
    ("João", "Gonçalves", "M", "Portuguese"), ("Luíza", "Albuquerque", "F", "Brazilian"),
    ("Jean-Pierre", "Dubois", "M", "French"), ("Aurélie", "Lefèvre", "F", "French"),
    ("Maëlle", "Girard", "F", "French"), ("Jürgen", "Müller", "M", "German"),
    ("Friederike", "Vogelsang", "F", "German"), ("Giuseppe", "Russo", "M", "Italian"),
    ("Gianluca", "D'Angelo", "M", "Italian"), ("Francesca", "Bianchi", "F", "Italian"),
    ("Maarten", "van der Berg", "M", "Dutch"), ("Femke", "de Vries", "F", "Dutch"),
    ("Łukasz", "Kowalski", "M", "Polish"), ("Agnieszka", "Wiśniewska", "F", "Polish"),
    ("Olga", "Ivanova", "F", "Russian"), ("Dmitri", "Sokolov", "M", "Russian"),
    ("Oleksandr", "Kovalenko", "M", "Ukrainian"), ("Eleni", "Papadopoulou", "F", "Greek"),
    ("Mehmet", "Yılmaz", "M", "Turkish"), ("Ayşe", "Demir", "F", "Turkish"),
    ("Mohammed", "Al-Farsi", "M", "Arabic"), ("Layla", "Haddad", "F", "Arabic"),
    ("Youssef", "El-Amin", "M", "Arabic"), ("Dariush", "Rahimi", "M", "Persian"),
    ("Shirin", "Tehrani", "F", "Persian"), ("Yael", "Friedman", "F", "Hebrew"),
    ("Noa", "Ben-David", "F", "Hebrew"), ("Rahul", "Verma", "M", "Hindi"),
    ("Priya", "Sharma", "F", "Hindi"), ("Karthik", "Subramanian", "M", "Tamil"),
    ("Lakshmi", "Venkataraman", "F", "Tamil"), ("Srinivas", "Reddy", "M", "Telugu"),
    ("Sourav", "Chatterjee", "M", "Bengali"), ("Harpreet", "Kaur", "F", "Punjabi"),
    ("Gurdeep", "Sandhu", "M", "Punjabi"), ("Imran", "Qureshi", "M", "Urdu"),
    ("Ayesha", "Siddiqui", "F", "Urdu"), ("Xiaoming", "Wang", "M", "Chinese"),
    ("Jiahui", "Chen", "F", "Chinese"), ("Ka-ho", "Wong", "M", "Cantonese"),
    ("Haruto", "Yamamoto", "M", "Japanese"), ("Yui", "Takahashi", "F", "Japanese"),
    ("Hyun-woo", "Park", "M", "Korean"), ("Ji-yeon", "Kim", "F", "Korean"),
    ("Văn An", "Nguyễn", "M", "Vietnamese"), ("Thị Mai", "Trần", "F", "Vietnamese"),
    ("Somchai", "Srisuk", "M", "Thai"), ("Maricel", "Dela Cruz", "F", "Filipino"),
    ("Budi", "Santoso", "M", "Indonesian"), ("Chukwuemeka", "Obi", "M", "Igbo"),
    ("Ngozi", "Okafor", "F", "Igbo"), ("Oluwaseun", "Adeyemi", "M", "Yoruba"),
    ("Abubakar", "Musa", "M", "Hausa"), ("Kwame", "Mensah", "M", "Akan"),
    ("Akosua", "Boateng", "F", "Akan"), ("Wanjiru", "Kamau", "F", "Kikuyu"),
    ("Tesfaye", "Bekele", "M", "Amharic"), ("Hodan", "Warsame", "F", "Somali"),
    ("Zsófia", "Horváth", "F", "Hungarian"), ("Björn", "Lindqvist", "M", "Swedish"),
    ("Aino", "Virtanen", "F", "Finnish"), ("Keoni", "Kahananui", "M", "Hawaiian"),
    ("Aroha", "Ngata", "F", "Māori"), ("Sione", "Tuilagi", "M", "Samoan"), ("Winona", "Begay", "F", "Navajo"),
    ("Armen", "Petrosyan", "M", "Armenian"), ("Giorgi", "Beridze", "M", "Georgian"),
    ("Tomáš", "Dvořák", "M", "Czech"), ("Ioana", "Popescu", "F", "Romanian"), ("Miloš", "Jovanović", "M", "Serbian"),
    ("Guðrún", "Sigurðardóttir", "F", "Icelandic"), ("Mads", "Østergaard", "M", "Danish"),
    ("Thandiwe", "Dlamini", "F", "Zulu"), ("Bishnu", "Shrestha", "M", "Nepali"), ("Dilani", "Perera", "F", "Sinhala"),
    ("Aung Kyaw", "Moe", "M", "Burmese"), ("Sokha", "Chea", "F", "Khmer"), ("Batbayar", "Gantulga", "M", "Mongolian"),
    ("Aigerim", "Suleimenova", "F", "Kazakh"), ("Amine", "Benali", "M", "Moroccan"), ("Mbuyi", "Kabongo", "M", "Congolese"),
    ("Jean-Baptiste", "Toussaint", "M", "Haitian"), ("Shanice", "Campbell", "F", "Jamaican"),
    ("DeShawn", "Jackson", "M", "African American"), ("LaToya", "Washington", "F", "African American"),
    ("Ciara", "Ní Bhriain", "F", "Irish"),
    # names that are ordinary words
    ("Summer", "Hill", "F", "word"), ("Autumn", "Rivers", "F", "word"), ("Pearl", "Black", "F", "word"),
    ("Sterling", "Price", "M", "word"), ("Lily", "Rose", "F", "word"), ("Honor", "Wells", "F", "word"),
    ("Rose", "Baker", "F", "word"), ("Hope", "Young", "F", "word"), ("Will", "Turner", "M", "word"),
    ("Sunny", "Long", "F", "word"), ("Grace", "Lee", "F", "word"), ("Faith", "Stone", "F", "word"),
    ("Joy", "King", "F", "word"), ("Dawn", "Bell", "F", "word"), ("Frank", "Hunter", "M", "word"),
    ("Mark", "Cook", "M", "word"), ("Bill", "Rice", "M", "word"), ("Ray", "Black", "M", "word"),
    ("Iris", "Green", "F", "word"), ("Ruby", "White", "F", "word"), ("Amber", "Park", "F", "word"),
    ("Precious", "Adeyemi", "F", "word"), ("Blessing", "Okoro", "F", "word"), ("Destiny", "Brooks", "F", "word"),
]
DOCTORS = ["Okonkwo", "Fitzgerald", "Nakamura", "Lindqvist", "Castellanos", "Abernathy", "Ravindran",
           "Kowalczyk", "Moreau", "Achterberg", "Bhattacharya", "Oyelaran"]

FORMATS = {
    "DATE": ["03/14/2023", "14/03/2023", "2024-01-05", "12 Jan 2022", "March 3, 1961", "3rd of March",
             "3 mars 2021", "5 de mayo de 2019", "14.03.1962", "Sept. 9", "21 October 2020", "2023-11-30",
             "7/4/19", "December 2019", "14. März 2022", "2nd of June"],
    "AGE": ["93", "97", "101", "91", "95", "99"],
    "PHONE": ["(617) 555-0142", "617-555-0199", "+1 415 555 0123", "+44 20 7946 0958", "020 7946 0958",
              "07700 900123", "+44 (0)161 496 0000", "+33 1 42 68 53 00", "01 42 68 53 00", "06 12 34 56 78",
              "+49 30 901820", "+91 98765 43210", "03-1234-5678", "(02) 9876 5432", "+61 2 9876 5432",
              "+55 11 91234-5678", "+234 803 123 4567", "555.123.4567"],
    "EMAIL": ["r.verma@gmail.com", "siobhan.osullivan@hospital.ie", "k_mensah+labs@outlook.com",
              "jp.dubois@orange.fr", "hyunwoo.park@naver.com", "ngozi.okafor@yahoo.co.uk"],
    "URL": ["https://mychart.example.org/patient/88123", "www.caringbridge.org/visit/rosebaker",
            "http://192.0.2.44/pacs/study?id=5521", "patientportal.health/record/7781"],
    "IP": ["10.0.12.7", "192.168.1.254", "172.16.4.31", "2001:db8::1", "fe80::1ff:fe23:4567:890a"],
    "SSN": ["123-45-6789", "078-05-1120", "219 09 9999"],
    "NATIONAL": [("NI number", "QQ 12 34 56 C"), ("NHS number", "943 476 5919"), ("SIN", "046 454 286"),
                 ("NIR", "1 84 12 75 108 123 45"), ("Aadhaar", "2345 6789 0123"), ("BSN", "123456782")],
    "MRN": [("MRN", "00123456"), ("MRN:", "A7781923"), ("hospital number", "RX4471923"), ("IPP", "80012345"),
            ("medical record number", "MR-0094412"), ("MR#", "7654321"), ("dossier", "2023-004512")],
    "ACCOUNT": [("account", "4471-2290-18"), ("IBAN", "GB82 WEST 1234 5698 7654 32"),
                ("IBAN", "FR76 3000 6000 0112 3456 7890 189"), ("billing account", "BA-99120347")],
    "HEALTH_PLAN": [("member ID", "XYZ123456789"), ("Medicare", "1EG4-TE5-MK73"), ("Medicaid ID", "12345678A"),
                    ("policy number", "POL-99812-B"), ("EHIC", "80250000000123456789"),
                    ("group no.", "G45678")],
    "LICENSE": [("driver's licence", "D1234-56789-01234"), ("passport", "K12345678"), ("GMC number", "7012345"),
                ("NPI", "1234567893"), ("DEA", "AB1234563"), ("licence no.", "RN-448812")],
    "VEHICLE": [("plate", "7ABC123"), ("VIN", "1HGCM82633A004352"), ("number plate", "AB12 CDE"),
                ("licence plate", "GH-512-KL")],
    "DEVICE": [("serial number", "PJN123456"), ("IMEI", "490154203237518"), ("implant ID", "MDT-55812-X"),
               ("S/N", "SN-4471-X9"), ("UDI", "(01)00844588003288")],
    # (street, city, postcode): US and non-US
    "ADDRESS": [("42 Oak Street", "Springfield", "IL 62704"), ("1600 Pennsylvania Avenue", "Harrisburg", "PA 17120"),
                ("221B Baker Street", "London", "NW1 6XE"), ("14 Albert Road", "Manchester", "M1 1AE"),
                ("12 rue de Rivoli", "Paris", "75001"), ("Via Roma 15", "Torino", "10121"),
                ("Calle Mayor 5", "Madrid", "28013"), ("Hauptstraße 12", "Berlin", "10115"),
                ("Avenida Paulista, 1578", "São Paulo", "01310-200"), ("350 Bloor Street", "Toronto", "M5S 1S4"),
                ("Prinsengracht 263", "Amsterdam", "1016 GV"), ("27 Awolowo Road", "Lagos", "101233"),
                ("9 Ngong Lane", "Nairobi", "00100"), ("3 Marine Drive", "Mumbai", "400020")],
    "CITY": ["London", "Lyon", "Leeds", "Lagos", "Mumbai", "Hamburg", "Osaka", "Busan", "Hanoi", "Manila",
             "Karachi", "Accra", "Marseille", "Bristol", "Reading", "Bath", "Guadalajara", "Kraków"],
}

# clinical values that must survive, marked <<...>>
CLINICAL = [
    "Started <<metformin 500 mg>> BID and <<atorvastatin 40 mg>> nightly.",
    "<<HbA1c 7.2%>>, <<creatinine 1.4 mg/dL>>, <<eGFR 45 mL/min/1.73 m2>>.",
    "<<BP 150/90 mmHg>>, <<HR 110 bpm>>, <<SpO2 94%>> on room air.",
    "Known <<Parkinson's disease>> on <<carbidopa-levodopa 25/100>> TID.",
    "History of <<Crohn disease>> of the <<terminal ileum>>, on <<adalimumab 40 mg>> every 2 weeks.",
    "<<Hashimoto thyroiditis>>; <<TSH 4.5 mIU/L>>, <<levothyroxine 75 mcg>> daily.",
    "<<Bell palsy>> of the left face, <<prednisone 60 mg>> for 5 days.",
    "Coded <<ICD-10 E11.9>> and <<CPT 99213>>.",
    "<<Graves disease>> treated with <<methimazole 10 mg>>.",
    "<<Wells score 4>>, <<D-dimer 800 ng/mL>>; CTPA showed <<pulmonary embolism>>.",
    "<<Glasgow Coma Scale 14>> on arrival.",
    "<<Wilson disease>> with <<Kayser-Fleischer rings>>.",
    "<<Apixaban 5 mg>> BID for <<atrial fibrillation>>, <<CHA2DS2-VASc score of 3>>.",
    "Stenosis of the <<left anterior descending artery>>; <<troponin 0.04 ng/mL>>.",
    "<<Potassium 3.1 mmol/L>> replaced with <<potassium chloride 40 mEq>> PO.",
    "<<Semaglutide 1 mg>> weekly; weight 92 kg.",
    "<<Vancomycin trough 15 mcg/mL>>; <<ceftriaxone 2 g>> IV q24h.",
    "<<Alzheimer disease>>, <<MMSE 21/30>>, on <<donepezil 10 mg>>.",
    "<<Down syndrome>> with <<atrioventricular septal defect>>.",
    "<<Empagliflozin 10 mg>> added; <<NT-proBNP 1800 pg/mL>>.",
    "<<Guillain-Barre syndrome>>, started <<IVIG 0.4 g/kg/day>>.",
    "<<Hodgkin lymphoma>> stage IIA after <<ABVD>> x4.",
    "<<WBC 12.4>>, <<hemoglobin 10.5 g/dL>>, <<platelets 150,000/uL>>, <<INR 2.5>>.",
    "<<Cushing syndrome>>; <<late-night salivary cortisol>> elevated.",
    "<<Sjögren syndrome>> with <<anti-SSA>> positive.",
    "Right <<Colles fracture>> splinted; <<ibuprofen 400 mg>> PRN.",
    "<<Kawasaki disease>>, <<IVIG 2 g/kg>> and <<aspirin 80 mg/kg/day>>.",
    "<<J45.909>> asthma; <<albuterol 2.5 mg>> nebulized q4h.",
    "<<Foley catheter>> removed; <<urine output 0.5 mL/kg/h>>.",
    "<<Lactate 4.1 mmol/L>> and <<procalcitonin 2.1 ng/mL>>; <<qSOFA 2>>.",
    "<<Furosemide 40 mg>> IV BID for <<HFrEF>>, <<LVEF 30%>>.",
    "<<Insulin glargine 20 units>> at bedtime; <<glucose 250 mg/dL>>.",
    "<<Mallory-Weiss tear>> on <<EGD>>; <<pantoprazole 40 mg>> IV.",
    "<<Raynaud phenomenon>> and <<nifedipine 30 mg>> daily.",
    "<<Addison disease>>: <<hydrocortisone 20 mg>> in the morning.",
    "<<Stevens-Johnson syndrome>> after <<lamotrigine>>.",
    "<<Babinski sign>> present on the right; <<NIHSS 6>>.",
    "<<Murphy sign>> positive; <<lipase 45 U/L>>.",
    "<<Barrett esophagus>> on surveillance.",
    "<<Tidal volume 6 mL/kg>>, <<PEEP 5 cmH2O>>, <<FiO2 0.4>>.",
    "<<Warfarin 5 mg>> daily, goal <<INR 2-3>>; <<vitamin K 10 mg>> IV given.",
    "<<Oxycodone 5 mg>> q4h PRN; <<naloxone 0.4 mg>> at the bedside.",
    "MRI showed a <<meningioma>> of the <<left frontal convexity>>.",
    "<<Sodium 128 mmol/L>>; fluid restriction and <<tolvaptan 15 mg>>.",
    "<<Pheochromocytoma>> suspected: <<plasma metanephrines>> elevated.",
    "<<Zollinger-Ellison syndrome>>; <<gastrin 1200 pg/mL>>.",
    "<<Tourette syndrome>> with motor tics; <<aripiprazole 5 mg>>.",
    "<<Huntington disease>> confirmed, <<CAG repeats 44>>.",
    "<<Marfan syndrome>> with <<aortic root dilatation 4.6 cm>>.",
    "<<Reed-Sternberg cells>> on the lymph node biopsy.",
    "<<Lewy bodies>> at autopsy; <<rivastigmine 6 mg>> BID before.",
    "<<Keytruda 200 mg>> every 3 weeks for <<non-small cell lung cancer>>.",
    "<<Ozempic 0.5 mg>> weekly and <<Jardiance 25 mg>> daily.",
    "Right <<carpal tunnel syndrome>>, positive <<Tinel sign>> and <<Phalen test>>.",
    "<<Cheyne-Stokes respiration>> noted overnight.",
    "<<Kussmaul breathing>>, <<pH 7.12>>, <<bicarbonate 8 mEq/L>>.",
    "<<Troponin I 2.3 ng/mL>>; <<STEMI>> in the <<inferior leads>>.",
    "<<Methotrexate 15 mg>> weekly with <<folic acid 1 mg>> daily.",
    "<<Whipple procedure>> for <<pancreatic adenocarcinoma>>.",
    "<<Hirschsprung disease>> in the neonate; <<rectal biopsy>> planned.",
    "<<Osgood-Schlatter disease>> of the <<tibial tuberosity>>.",
    "<<Dupuytren contracture>> of the <<fourth digit>>.",
    "<<Meniere disease>>: <<betahistine 16 mg>> TID.",
    "<<Ferritin 8 ng/mL>>, <<ferric carboxymaltose 750 mg>> IV.",
    "<<ALT 220 U/L>>, <<AST 180 U/L>>, <<bilirubin 3.2 mg/dL>>.",
    "<<Gleason 3+4=7>> <<prostate adenocarcinoma>>, <<PSA 8.2 ng/mL>>.",
    "<<Clostridioides difficile>> colitis, <<fidaxomicin 200 mg>> BID.",
    "<<Epstein-Barr virus>> serology positive; <<splenomegaly>> on ultrasound.",
    "<<Lyme disease>> with <<erythema migrans>>, <<doxycycline 100 mg>> BID.",
]

TEMPLATES = [
    "{full}, a 54-year-old {noun}, presented to the emergency department on {DATE} with chest pain. {c1} {c2} "
    "Contact: {PHONE}.",
    "Discharge summary for {title} {surname_only} ({MRN}). DOB {DATE}. Address: {ADDRESS}. {c1} "
    "Follow-up with Dr. {doctor} in 2 weeks.",
    "{lower} seen today for follow up. {c1} {c2} Email {EMAIL}; phone {PHONE}.",
    "Patient {full} ({AGE}-year-old) was transferred from {CITY} on {DATE}. {c1} Insurance: {HEALTH_PLAN}.",
    "{inverted} - {c1} Pacemaker {DEVICE}. Next review {DATE}.",
    "Spoke with {given_poss} daughter {other_given} by phone at {PHONE}. {c1} {given} lives in {CITY}.",
    "{given} is a 47-year-old {noun} with a history below. {c1} Portal: {URL}. Workstation IP {IP}.",
    "Referral letter: {title} {full}, {ADDRESS}. Tel {PHONE}. {NATIONAL}. {c1}",
    "{full} (DOB {DATE}), SSN {SSN}. {LICENSE}. Vehicle {VEHICLE}. {c1}",
    "Seen with {relation} {other_full}. {c1} Billing: {ACCOUNT}. {c2}",
    "Dr. {doctor} reviewed {full} on {DATE}; {c1} {c2}",
    "HPI: {given} {surname} is a {AGE} year old {noun}. {c1} {given} reports feeling better since {DATE}.",
    "Hospital course: {surname} tolerated treatment. {c1} {given} was discharged home to {ADDRESS} on {DATE}.",
    "pt {lower} aged {AGE}, {c1} daughter {other_lower} called from {PHONE}.",
    "{given} {surname} returned from {CITY} on {DATE}. {c1} {c2} Next of kin: {other_full}, {PHONE}.",
    "Name: {full}\nDOB: {DATE}\nMRN: {MRN_VALUE}\nPhone: {PHONE}\n{c1}",
    "From: {EMAIL}\nRe: {full}\n{c1} {c2} Please call me back on {PHONE}.",
    "{c1} Plan discussed with {given} and {other_given}. Dictated by Dr. {doctor}, {DATE}.",
    "cc: Dr. {doctor}\nDear Dr. {doctor}, I saw {full} today. {c1} {given} is keen to continue.",
    "{title} {surname_only}'s {relation} called: {given} fell at home on {DATE}. {c1}",
]
NOUNS = {"M": "man", "F": "woman"}
TITLES = {"M": ["Mr.", "Mr", "Dr.", "Mx."], "F": ["Mrs.", "Ms.", "Ms", "Dr.", "Miss"]}
RELATIONS = {"M": "wife", "F": "husband"}


@dataclass
class Note:
    text: str = ""
    identifiers: list[tuple[int, int, str]] = field(default_factory=list)   # (start, end, kind)
    clinical: list[tuple[int, int]] = field(default_factory=list)

    def add(self, piece: str, kind: str | None = None):
        start = len(self.text)
        self.text += piece
        if kind:
            self.identifiers.append((start, len(self.text), kind))

    def add_clinical(self, sentence: str):
        for part in re.split(r"(<<.*?>>)", sentence):
            if part.startswith("<<"):
                start = len(self.text)
                self.text += part[2:-2]
                self.clinical.append((start, len(self.text)))
            else:
                self.text += part


def _name(note: Note, given: str, surname: str | None):
    """A full name, each word its own NAME span; particles ("van der") belong to the surname."""
    note.add(given, "NAME")
    if surname:
        note.add(" ")
        note.add(surname, "NAME")


def build_note(template: str, person, other, rng: random.Random) -> Note:
    given, surname, sex, _ = person
    o_given, o_surname, _, _ = other
    note = Note()
    clin = rng.sample(CLINICAL, 2)
    for part in re.split(r"(\{\w+\})", template):
        if not part.startswith("{"):
            note.add(part)
            continue
        slot = part[1:-1]
        if slot == "full":
            _name(note, given, surname)
        elif slot == "lower":
            _name(note, given.lower(), surname.lower())
        elif slot == "other_lower":
            _name(note, o_given.lower(), o_surname.lower())
        elif slot == "given":
            note.add(given, "NAME")
        elif slot == "given_poss":
            note.add(given, "NAME")
            note.add("'s")
        elif slot in ("surname", "surname_only"):
            note.add(surname, "NAME")
        elif slot == "inverted":
            note.add(surname, "NAME")
            note.add(", ")
            note.add(given, "NAME")
        elif slot == "other_given":
            note.add(o_given, "NAME")
        elif slot == "other_full":
            _name(note, o_given, o_surname)
        elif slot == "doctor":
            note.add(rng.choice(DOCTORS), "NAME")
        elif slot == "title":
            note.add(rng.choice(TITLES[sex]))
        elif slot == "noun":
            note.add(NOUNS[sex])
        elif slot == "relation":
            note.add(RELATIONS[sex])
        elif slot in ("c1", "c2"):
            note.add_clinical(clin[0] if slot == "c1" else clin[1])
        elif slot == "ADDRESS":
            street, city, code = rng.choice(FORMATS["ADDRESS"])
            note.add(street, "ADDRESS")
            note.add(", ")
            if code[:1].isdigit() and city in ("Paris", "Torino", "Madrid", "Berlin", "Amsterdam"):
                note.add(code, "ZIP")            # "75001 Paris": the postcode first
                note.add(" ")
                note.add(city, "LOCATION")
            else:
                note.add(city, "LOCATION")
                note.add(" ")
                if re.fullmatch(r"[A-Z]{2} \d{5}", code):
                    note.add(code[:3])           # the state may stay (Safe Harbor), the ZIP may not
                    code = code[3:]
                note.add(code, "ZIP")
        elif slot == "MRN_VALUE":
            note.add(rng.choice(FORMATS["MRN"])[1], "MRN")
        elif slot == "CITY":
            note.add(rng.choice(FORMATS["CITY"]), "LOCATION")
        elif isinstance(FORMATS[slot][0], tuple):
            cue, value = rng.choice(FORMATS[slot])
            note.add(cue + " ")
            note.add(value, slot)
        else:
            note.add(rng.choice(FORMATS[slot]), slot)
    return note


def notes(seed: int = 20) -> list[Note]:
    """Each person in four templates, plus a lower-case copy of every ninth note: ~560 notes."""
    rng = random.Random(seed)
    out = []
    for i, person in enumerate(PEOPLE):
        for k in range(4):
            template = TEMPLATES[(i + 4 * k) % len(TEMPLATES)]
            other = PEOPLE[(i * 7 + k + 3) % len(PEOPLE)]
            out.append(build_note(template, person, other, rng))
    # whole notes typed in lower case, as quick notes often are
    for note in out[::9]:
        out.append(Note(note.text.lower(), list(note.identifiers), list(note.clinical)))
    return out


def scores(scrub_spans, table: list[Note]) -> dict:
    """Identifier recall (every letter and digit of an identifier masked) and clinical retention (no
    character of a clinical value masked), with the misses for the report."""
    hits = total = kept = values = 0
    missed, lost = [], []
    for note in table:
        masked = bytearray(len(note.text))
        for s, e, _ in scrub_spans(note.text):
            masked[s:e] = b"\x01" * (e - s)
        for s, e, kind in note.identifiers:
            total += 1
            if all(masked[i] for i in range(s, e) if note.text[i].isalnum()):
                hits += 1
            else:
                missed.append((kind, note.text[s:e], note.text))
        for s, e in note.clinical:
            values += 1
            if not any(masked[s:e]):
                kept += 1
            else:
                lost.append((note.text[s:e], note.text))
    return {"recall": hits / total, "retention": kept / values, "identifiers": total, "values": values,
            "missed": missed, "lost": lost}
