"""The words around names: titles and cues before them, particles inside them, the heads that make a
surname an eponym, and the verbs that take a person after them. Lower case; names.py compares
`word.lower()`."""

TITLES = frozenset("""mr mrs ms mx miss mister master dr doctor prof professor sir dame lady lord madam madame mme
mlle mademoiselle monsieur herr frau sr sra srta señor senor señora senora señorita dona doña dom dott sig signor
signora shri sri smt kumari mst md alhaji alhaja hajji haji sheikh pastor rev reverend fr father sister brother
nurse capt captain sgt sergeant lt lieutenant col colonel officer hon judge rabbi imam pt""".split())
# a capitalized ordinary word after these is a name: "his wife Joy", "patient Will", "seen by Hope"
CUES = frozenset("""patient pt patients named name names called alias aka son daughter wife husband mother mom mum
father dad brother sister spouse partner fiancé fiancée fiance fiancee boyfriend girlfriend friend neighbour neighbor
guardian caregiver carer uncle aunt niece nephew cousin grandson granddaughter grandmother grandfather grandma
grandpa grandchild child baby infant contact kin nok by attending physician provider gp nurse surgeon resident
intern consultant cc dear hi hello regards sincerely thanks mr mrs ms dr""".split())
# after these even a lower-case ordinary word is a name: "named rose", "name: hope"
STRONG_CUES = frozenset("named name names called alias aka dear".split())
KIN = frozenset("""son daughter wife husband mother mom mum father dad brother sister spouse partner fiancé fiancée
boyfriend girlfriend friend neighbour neighbor uncle aunt niece nephew cousin grandson granddaughter grandmother
grandfather grandma grandpa grandchild""".split())
# after a kinship word these are verbs, not names: "daughter will call"
NOT_NAMES = frozenset("will may can might must shall did does do is was has had would could should also then".split())
PARTICLES = frozenset("de du des del della di da do dos das von van der den ter ten la le el al bin ibn ben bint "
                      "abu ap mac y e".split())
# words after which a surname names a disease, a sign or a procedure, not a person
EPONYM_HEADS = frozenset("""disease diseases syndrome syndromes sign signs palsy test tests criteria score scores
scale classification lymphoma reflex maneuver manoeuvre procedure operation fracture fractures ulcer ulcers node
nodes triad phenomenon tumor tumour tumors sarcoma disorder anomaly lesion lesions spots rings ring catheter tube
murmur esophagus oesophagus thyroiditis encephalopathy contracture cyst hernia law equation formula index stain virus
bacillus cell cells body bodies duct canal gland glands space line lines point angle tear rule method technique
block position repair fundoplication anastomosis shunt incision approach nodule nodules staging stage grade
arthritis dementia dystrophy ataxia chorea anemia anaemia deformity aneurysm pouch diverticulum diet regimen
protocol pathway knot fold folds tumours tremor dermatitis agar medium media sequence diagram""".split())
PERSON_VERBS = frozenset("""is was has had reports reported presents presented states stated denies denied
complains complained returns returned arrives arrived notes noted says said describes described appears appeared
underwent undergoes takes took lives lived works worked continues remains remained feels felt tolerated agrees
agreed declined declines requested requests came comes went goes attends attended will would can could
admits admitted endorses endorsed walks walked seen""".split())
# "Tanner IV": a stage after an eponym
ROMAN = frozenset("i ii iii iv v vi".split())
