"""Vocabularies of the demo world: people, companies, markets, titles and the sales team.

Written by hand for the demo (no external data): plausible, fictional, and varied enough
that a list of a few thousand leads does not look generated.
"""

from __future__ import annotations

# fmt: off
FIRST_NAMES: dict[str, tuple[str, ...]] = {
    "en": (
        "James", "Mary", "Robert", "Patricia", "Michael", "Jennifer", "David", "Linda", "William", "Elizabeth",
        "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah", "Daniel", "Karen", "Matthew", "Emily",
        "Anthony", "Michelle", "Mark", "Amanda", "Steven", "Melissa", "Andrew", "Stephanie", "Joshua", "Rebecca",
        "Kevin", "Laura", "Brian", "Rachel", "Ryan", "Megan", "Jacob", "Hannah", "Tyler", "Olivia",
        "Ethan", "Chloe", "Noah", "Grace", "Liam", "Ava", "Aiden", "Zoe", "Marcus", "Nicole",
        "Wei", "Mei", "Raj", "Aisha", "Carlos", "Lucia", "Omar", "Fatima", "Kwame", "Ngozi",
    ),
    "de": ("Lukas", "Anna", "Felix", "Lena", "Jonas", "Marie", "Maximilian", "Sophie", "Tobias", "Katrin",
           "Stefan", "Julia", "Florian", "Sabine", "Jan", "Nina", "Matthias", "Claudia"),
    "fr": ("Louis", "Camille", "Hugo", "Manon", "Julien", "Chloé", "Antoine", "Léa", "Nicolas", "Inès",
           "Mathieu", "Élodie", "Thomas", "Pauline", "Guillaume", "Margaux"),
    "nl": ("Daan", "Sanne", "Sem", "Fleur", "Bram", "Lotte", "Joris", "Eva", "Ruben", "Iris",
           "Lars", "Ingrid", "Erik", "Astrid", "Mikael", "Freja"),
    "es": ("Javier", "Lucía", "Alejandro", "Carmen", "Pablo", "Elena", "Marco", "Giulia", "Luca", "Francesca",
           "Diego", "Sofía", "Alessandro", "Chiara"),
    "in": ("Arjun", "Priya", "Rohan", "Ananya", "Vikram", "Sneha", "Aditya", "Kavya", "Rahul", "Divya"),
    "jp": ("Haruto", "Yui", "Sota", "Hina", "Kenji", "Aiko", "Takumi", "Sakura"),
    "pt": ("João", "Ana", "Pedro", "Beatriz", "Lucas", "Mariana", "Gabriel", "Larissa"),
}

LAST_NAMES: dict[str, tuple[str, ...]] = {
    "en": (
        "Smith", "Johnson", "Williams", "Brown", "Jones", "Miller", "Davis", "Wilson", "Anderson", "Taylor",
        "Thomas", "Moore", "Jackson", "Martin", "Lee", "Thompson", "White", "Harris", "Clark", "Lewis",
        "Robinson", "Walker", "Young", "Allen", "King", "Wright", "Scott", "Green", "Baker", "Adams",
        "Nelson", "Hill", "Campbell", "Mitchell", "Roberts", "Carter", "Phillips", "Evans", "Turner", "Parker",
        "Collins", "Edwards", "Stewart", "Morris", "Murphy", "Cook", "Rogers", "Morgan", "Cooper", "Reed",
        "Chen", "Wang", "Nguyen", "Kim", "Patel", "Shah", "Okafor", "Mensah", "Garcia", "Rodriguez",
        "O'Brien", "Kelly", "Walsh", "Byrne", "Hughes", "Price", "Bennett", "Wood", "Hall", "Fraser",
    ),
    "de": ("Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Schulz",
           "Hoffmann", "Koch", "Richter", "Klein", "Wolf", "Neumann", "Braun"),
    "fr": ("Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand", "Leroy", "Moreau",
           "Simon", "Laurent", "Lefebvre", "Michel", "Garnier", "Faure"),
    "nl": ("de Jong", "Jansen", "de Vries", "van Dijk", "Bakker", "Visser", "Smit", "Meijer", "Andersson",
           "Johansson", "Nielsen", "Hansen", "Larsen", "Virtanen", "Lindqvist", "Berg"),
    "es": ("García", "Fernández", "López", "Martínez", "Sánchez", "Pérez", "Rossi", "Russo", "Ferrari",
           "Esposito", "Bianchi", "Romano", "Ricci", "Moretti"),
    "in": ("Sharma", "Patel", "Gupta", "Iyer", "Reddy", "Nair", "Mehta", "Kumar", "Singh", "Rao"),
    "jp": ("Sato", "Suzuki", "Takahashi", "Tanaka", "Watanabe", "Ito", "Yamamoto", "Nakamura"),
    "pt": ("Silva", "Santos", "Oliveira", "Souza", "Costa", "Pereira", "Almeida", "Ferreira"),
}

# country -> (weight among companies, name pool, top-level domains, UTC offset of office hours, region)
COUNTRIES: dict[str, tuple[float, str, tuple[str, ...], int, str]] = {
    "US": (44, "en", (".com", ".com", ".com", ".io", ".co"), -5, "na"),
    "CA": (5, "en", (".ca", ".com"), -5, "na"),
    "GB": (10, "en", (".co.uk", ".com", ".io"), 0, "emea"),
    "IE": (2, "en", (".ie", ".com"), 0, "emea"),
    "DE": (7, "de", (".de", ".com"), 1, "emea"),
    "FR": (5, "fr", (".fr", ".com"), 1, "emea"),
    "NL": (3, "nl", (".nl", ".com"), 1, "emea"),
    "BE": (1, "fr", (".be",), 1, "emea"),
    "ES": (2, "es", (".es", ".com"), 1, "emea"),
    "IT": (2, "es", (".it",), 1, "emea"),
    "SE": (2, "nl", (".se", ".com"), 1, "emea"),
    "DK": (1, "nl", (".dk",), 1, "emea"),
    "NO": (1, "nl", (".no",), 1, "emea"),
    "FI": (1, "nl", (".fi",), 2, "emea"),
    "AU": (4, "en", (".com.au", ".com"), 10, "apac"),
    "NZ": (1, "en", (".co.nz",), 12, "apac"),
    # Markets the default model does not serve: they lower fit but are not disqualified.
    "IN": (3, "in", (".in", ".com"), 5, "apac"),
    "BR": (2, "pt", (".com.br",), -3, "na"),
    "JP": (1, "jp", (".co.jp",), 9, "apac"),
    "SG": (1, "en", (".sg", ".com"), 8, "apac"),
    "MX": (1, "es", (".mx", ".com"), -6, "na"),
    "ZA": (1, "en", (".co.za",), 2, "emea"),
    "PL": (1, "en", (".pl",), 1, "emea"),
}
# Where nobody may sell: a handful of personal addresses claim them, and are disqualified.
EMBARGOED_COUNTRIES = ("IR", "CU")

FREE_MAIL = (
    ("gmail.com", 40), ("outlook.com", 12), ("yahoo.com", 10), ("hotmail.com", 8), ("icloud.com", 6),
    ("gmx.de", 3), ("web.de", 2), ("proton.me", 2), ("yahoo.co.uk", 2), ("hotmail.fr", 2),
)
COMPETITOR_DOMAIN = "rivalscore.io"

# industry -> (weight, revenue per employee in USD, name endings)
INDUSTRIES: dict[str, tuple[float, float, tuple[str, ...]]] = {
    "software": (18, 220_000, ("Software", "Labs", "Systems", "Cloud", "Analytics", "Technologies", "AI")),
    "financial services": (10, 350_000, ("Capital", "Financial", "Bank", "Insurance", "Wealth", "Payments")),
    "healthcare": (9, 150_000, ("Health", "Medical", "Care", "Clinics", "Biosciences")),
    "manufacturing": (9, 250_000, ("Industries", "Manufacturing", "Components", "Machinery", "Materials")),
    "retail": (7, 180_000, ("Retail", "Stores", "Outfitters", "Market", "Brands")),
    "telecommunications": (4, 400_000, ("Telecom", "Networks", "Communications", "Mobile")),
    # Outside the default model's target industries.
    "education": (5, 90_000, ("Academy", "Learning", "Education", "Schools")),
    "government": (3, 120_000, ("Agency", "Authority", "Council")),
    "media": (5, 200_000, ("Media", "Studios", "Publishing")),
    "logistics": (5, 200_000, ("Logistics", "Freight", "Shipping")),
    "energy": (4, 600_000, ("Energy", "Power", "Renewables")),
    "hospitality": (3, 70_000, ("Hotels", "Hospitality", "Resorts")),
    "nonprofit": (3, 60_000, ("Foundation", "Trust", "Alliance")),
    "consulting": (7, 180_000, ("Consulting", "Advisors", "Group", "Partners")),
    "real estate": (3, 300_000, ("Properties", "Realty", "Estates")),
}

NAME_STEMS = (
    "Northwind", "Bluepeak", "Ironbridge", "Silverline", "Brightwater", "Redwood", "Granite", "Summit", "Cobalt",
    "Harbor", "Lumen", "Vertex", "Orbital", "Keystone", "Meridian", "Pinecrest", "Clearwater", "Crescent",
    "Evergreen", "Falcon", "Horizon", "Juniper", "Larkspur", "Maple", "Nimbus", "Oakridge", "Polar", "Quartz",
    "Riverstone", "Sterling", "Tidewater", "Vantage", "Willow", "Zenith", "Aurora", "Beacon", "Cedar", "Ember",
    "Foxglove", "Helix", "Indigo", "Jetstream", "Kestrel", "Lighthouse", "Mosaic", "Nova", "Onyx", "Pioneer",
    "Sapphire", "Westfield", "Alder", "Blackbird", "Copperleaf", "Driftwood", "Elmstead", "Fairhaven", "Glenrock",
    "Highgate", "Ashford", "Bramble", "Canyon", "Dovetail", "Eastgate", "Fernhill", "Goldcrest", "Halcyon",
    "Ironwood", "Kingsbridge", "Lakeshore", "Marlowe", "Northstar", "Oxbow", "Parkside", "Redfern", "Seabright",
    "Thornbury", "Upland", "Valemont", "Whitmore", "Yarrow", "Acorn", "Bellweather", "Cinder", "Daybreak",
)
LEGAL_SUFFIX = {"DE": " GmbH", "GB": " Ltd", "FR": " SAS", "NL": " B.V.", "SE": " AB", "AU": " Pty Ltd"}
UNIVERSITIES = (
    ("northbridge.edu", "Northbridge University"),
    ("lakemont.edu", "Lakemont College"),
    ("st-aldric.ac.uk", "St Aldric's University"),
    ("tu-rheinfeld.de", "TU Rheinfeld"),
)

SENIORITIES = (("individual", 38), ("manager", 28), ("director", 17), ("vp", 10), ("c_level", 7))
DEPARTMENTS = (
    ("marketing", 30), ("sales", 20), ("operations", 10), ("data", 8), ("engineering", 8), ("it", 7),
    ("product", 5), ("finance", 4), ("customer success", 4), ("hr", 4),
)

# (seniority, department) -> titles a person of that rank in that team carries.
TITLES: dict[tuple[str, str], tuple[str, ...]] = {
    ("c_level", "marketing"): ("Chief Marketing Officer", "CMO"),
    ("c_level", "sales"): ("Chief Revenue Officer", "Chief Sales Officer"),
    ("c_level", "operations"): ("Chief Operating Officer", "COO"),
    ("c_level", "data"): ("Chief Data Officer",),
    ("c_level", "engineering"): ("Chief Technology Officer", "CTO"),
    ("c_level", "it"): ("Chief Information Officer", "CIO"),
    ("c_level", "product"): ("Chief Product Officer",),
    ("c_level", "finance"): ("Chief Financial Officer", "CFO"),
    ("c_level", "customer success"): ("Chief Customer Officer",),
    ("c_level", "hr"): ("Chief People Officer",),
    ("vp", "marketing"): ("VP Marketing", "VP of Demand Generation", "SVP Marketing", "VP Growth"),
    ("vp", "sales"): ("VP Sales", "VP of Sales", "SVP Revenue", "VP Sales Development"),
    ("vp", "operations"): ("VP Revenue Operations", "VP Operations", "VP Business Operations"),
    ("vp", "data"): ("VP Data", "VP Analytics"),
    ("vp", "engineering"): ("VP Engineering", "VP of Engineering"),
    ("vp", "it"): ("VP IT", "VP Information Technology"),
    ("vp", "product"): ("VP Product",),
    ("vp", "finance"): ("VP Finance",),
    ("vp", "customer success"): ("VP Customer Success",),
    ("vp", "hr"): ("VP People",),
    ("director", "marketing"): ("Director of Marketing", "Director, Demand Generation", "Marketing Director",
                                "Director of Marketing Operations"),
    ("director", "sales"): ("Sales Director", "Director of Sales", "Director, Inside Sales"),
    ("director", "operations"): ("Director of Revenue Operations", "Director, Sales Operations"),
    ("director", "data"): ("Director of Data Science", "Director of Analytics"),
    ("director", "engineering"): ("Director of Engineering", "Engineering Director"),
    ("director", "it"): ("IT Director", "Director of IT"),
    ("director", "product"): ("Director of Product",),
    ("director", "finance"): ("Finance Director",),
    ("director", "customer success"): ("Director of Customer Success",),
    ("director", "hr"): ("HR Director",),
    ("manager", "marketing"): ("Marketing Manager", "Marketing Operations Manager", "Demand Generation Manager",
                               "Content Marketing Manager", "Campaign Manager"),
    ("manager", "sales"): ("Sales Manager", "SDR Manager", "Account Manager"),
    ("manager", "operations"): ("Revenue Operations Manager", "Sales Ops Manager", "Operations Manager"),
    ("manager", "data"): ("Analytics Manager", "Data Science Manager", "BI Manager"),
    ("manager", "engineering"): ("Engineering Manager", "Software Development Manager"),
    ("manager", "it"): ("IT Manager", "Systems Manager"),
    ("manager", "product"): ("Product Manager", "Senior Product Manager"),
    ("manager", "finance"): ("Finance Manager", "Controller"),
    ("manager", "customer success"): ("Customer Success Manager",),
    ("manager", "hr"): ("HR Manager", "Talent Acquisition Manager"),
    ("individual", "marketing"): ("Marketing Specialist", "Marketing Coordinator", "Demand Generation Specialist",
                                  "Marketing Analyst", "Content Writer", "Growth Marketer"),
    ("individual", "sales"): ("Account Executive", "Sales Development Representative", "Business Development Rep",
                              "Sales Ops Analyst"),
    ("individual", "operations"): ("RevOps Analyst", "Operations Analyst", "Sales Operations Specialist"),
    ("individual", "data"): ("Data Analyst", "Data Scientist", "Analytics Engineer", "BI Analyst"),
    ("individual", "engineering"): ("Software Engineer", "Senior Software Engineer", "Data Engineer",
                                    "Solutions Architect"),
    ("individual", "it"): ("Systems Administrator", "IT Specialist", "Salesforce Administrator"),
    ("individual", "product"): ("Product Designer", "Product Analyst"),
    ("individual", "finance"): ("Accountant", "Financial Analyst"),
    ("individual", "customer success"): ("Customer Success Specialist", "Support Engineer"),
    ("individual", "hr"): ("Recruiter", "HR Generalist"),
}
FOUNDER_TITLES = ("CEO", "Founder & CEO", "Co-founder", "Managing Director")
STUDENT_TITLES = ("Student", "MBA Student", "Marketing Intern", "Sales Intern", "Data Science Intern",
                  "Graduate Student")

# Acquisition channel -> (weight, sources within it, how much buying intent it brings).
CHANNELS: dict[str, tuple[float, tuple[str, ...], float]] = {
    "organic": (24, ("google", "bing", "blog", "direct"), 0.0),
    "paid search": (14, ("google ads", "bing ads"), 0.3),
    "paid social": (10, ("linkedin ads", "facebook ads"), -0.3),
    "webinar": (11, ("webinar",), 0.2),
    "referral": (7, ("customer referral", "g2", "capterra", "partner referral"), 0.8),
    "events": (9, ("trade show",), 0.0),
    "outbound": (15, ("sdr prospecting",), -0.6),
    "content syndication": (10, ("content syndication network",), -0.5),
}

# The sales team: SDRs accept or reject MQLs, account executives work the deals.
SDRS = {
    "na": ("sam.rivera", "alex.chen", "jordan.lee", "maria.garcia"),
    "emea": ("tom.becker", "chloe.martin", "lucas.jansen"),
    "apac": ("priya.patel", "kenji.tanaka"),
}
ACCOUNT_EXECUTIVES = {
    "na": ("chris.walker", "dana.kim", "nina.brooks"),
    "emea": ("sofia.rossi", "oliver.hughes"),
    "apac": ("emma.wilson",),
}
# fmt: on
