#!/usr/bin/env python3
"""Ground truth for cm3's PTB tokenisation on hand-written hard cases (contractions, quotes,
abbreviations, numbers, URLs, Unicode punctuation, captions whose last token depends on the next
caption). Runs pycocoevalcap 1.2's PTBTokenizer on them in ONE call (as COCOEvalCap does for one
side), so the cross-caption look-ahead is part of the oracle.

Usage: python3 bench/captions/ptb_tricky.py OUT.json
"""
import json
import sys

from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

CASES = [
    "A man's dog doesn't (really) bark.", "I cannot go, I can't, I won't.", "They're here; we've gone; I'd say you'll see.",
    "Don't DON'T Don't", "It's 5 o'clock and y'all are gonna wanna go.", "Rock 'n' roll in the '90s and '99 too",
    "'Twas the night; 'tis the season", "The U.S. flag is flying.", "The U.S. The end", "A sign that reads K.", "A man rides",
    "A sign that reads K.", "Two men ride", "Mr. Smith and Dr. Jones met at St. Louis Ave. yesterday.",
    "Apples, pears, etc. are sold.", "Apples, pears, etc.", "Signs for Jan. 5 and Feb. and Calif. and Mass. and Inc.",
    "e.g. this and i.e. that, a.m. and p.m. times", "At 5 a.m. The dog slept", "He is 6 ft. tall", "Figure fig. 3 and no. 5",
    "It costs $5.99 or $1,000,000.00 or 3.5% or -4 or +7", "Only £5 or €10 or ¢50 or ¥20", "A 3/4 cup, 22 3/4 St., 1/2 and ½ and ¾",
    "Dated 12/25/2014 and 1-2-99", "Call (555) 123-4567 or 555-123-4567 or 555.123.4567", "Visit http://www.example.com/a_b?x=1, now.",
    "Or www.google.com and cocodataset.org and foo.com/bar.", "Mail me at john.doe@example.com please", "@user #hashtag #1",
    "A c++ and C# and F# programmer", "AT&T and S&P-500 and Q&A and R&D", "Black & white and black &amp; white",
    "An x-ray, a t-shirt, a 3-D movie, non-U.S. goods, an all-in-one", "A \"quoted\" word and \"another one\"",
    "A 'single quoted' word and 'another'", "Curly “quotes” and ‘single’ and ’tis", "Wait... what?! Really?? Yes!!! No--maybe --- or ----",
    "Dots . . . spaced", "Ellipsis … unicode and em—dash and en–dash", "A smiley :) and :-( and ;) and :D and ^_^ and (^-^)",
    "Brackets [like this] and {that} and <angle> and <b>bold</b>", "A file.jpg and photo.png, image.JPEG.", "Temperature 20°C and 5×3 and 2+2=4",
    "Café naïve résumé Ångström", "Emoji 😀 in text 🐶 dog", "Tab\tseparated\tcaption", "Non\u00a0breaking\u00a0space",
    "Soft\u00adhyphen word", "Zero\u200bwidth", "A caption ending with a hyphen -", "- leading hyphen", "Hyphen - spaced - words",
    "Numbers 1,000 and 3.14 and .5 and 1.2.3 and 10:30 and 5'11\"", "A 1950s car and 4x4 truck and 2nd place and 3rd",
    "MAN'S DOG ISN'T", "A woman's and women's and boys' and James's", "Whose? Who's? It's its.", "The cat's toy's color",
    "Ol' man and li'l one and somethin' and goin' fishin'", "O'Neil and D'Angelo and L'Oreal", "c'mon and s'mores and nor'easter",
    "A sign reading 'STOP' and 'GO'", "'Hello' he said", "A man...", "Two men.", "Three men!", "Four men?", "a.", ".", "...", "",
    "   ", "(", ")", "\"", "'", "&", "A B C D E F.", "I. A hood jacket", "Mt. Fuji and Ft. Worth", "vs. the world, cf. that",
    "The No. 1 team", "A sign for Main St.", "Two dogs", "A Co. Ltd. firm and Pty. Ltd.", "Ph.D. student and Ed.D. teacher",
    "1st Ave.", "The end.", "A U.S.A. map", "Washington D.C.", "The D.C. area", "UK's and EU's", "C.D.s and pro- and anti- groups",
    "-LRB- literal -RRB-", "A man and/or woman on a tub/shower", "over/under pass 50/50 grinds", "2 1/2 years and 10-1/2 inches",
    "In 2014-2015 season", "Route 66/I-40", "A+ grade and B- grade", "100% sure and 50 % off", "Star * and ** and \\* escaped",
    "Under_score and __init__ and ___", "Hash ## and @@ and ~tilde~ and ^caret^ and |pipe|", "back\\slash", "Question?Mark!Inside",
    "A.B.C. and a.b.c", "Dept. of Labor and Univ. of Texas", "Gov. Brown and Sen. Smith and Rep. Jones", "Gonna gotta lemme gimme wanna",
    "A caption with\nnewline inside", "Trailing spaces   ", "   leading spaces", "Double  space",
    "^.[^x=~<>] a", "^.[^x=foo<>] a", "x.[^x=~<>]", "^_^ ok", "o.O and -_- and (-_-) and ^^;",
]


def main():
    out = sys.argv[1]
    tokenized = PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(CASES)})
    pairs = [[c, tokenized[i][0]] for i, c in enumerate(CASES)]
    with open(out, "w") as f:
        json.dump({"tool": "pycocoevalcap 1.2 PTBTokenizer, all cases in one call", "pairs": pairs}, f, indent=0, ensure_ascii=False)
    print(f"{len(pairs)} cases -> {out}")


if __name__ == "__main__":
    main()
