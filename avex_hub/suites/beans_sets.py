"""BEANS's data sets as data: where its preparation scripts put each set, its labels and its timing.

Facts from ``datasets.yml`` of BEANS (github.com/earthspecies/beans, MIT licence, commit b278b1d): the file of
each split relative to the BEANS checkout, the label list in BEANS's order, the label that labels outside the list
map to (``unknown_label``; None: such a label is an error), the clip length of the classification sets
(``max_duration``: the first seconds of each file, zero padded) and the window and shift of the detection sets.
(BEANS also resamples each set to a rate of its own; the model takes every set at its 16 kHz, so those rates are
not kept here.) ``control`` marks the two non-animal sets (ESC-50, Speech Commands) that BEANS runs beside the
animal ones. The avex-hub reader is :mod:`avex_hub.suites.beans`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BeansSet", "BEANS_SETS", "beans_set", "SPLIT_NAMES"]

SPLIT_NAMES = {"train": "train", "val": "valid", "test": "test"}  # our split name -> BEANS's file name part


@dataclass(frozen=True)
class BeansSet:
    """One BEANS data set: ``task`` is ``classification`` (one label per clip, ``clip_s`` seconds from the start)
    or ``detection`` (annotated recordings cut into ``window_s`` windows every ``shift_s`` seconds)."""

    name: str
    task: str
    folder: str  # relative to the BEANS checkout
    file: str  # the split's file name in ``folder``, with ``{split}`` for train / valid / test
    labels: tuple[str, ...]
    clip_s: float | None = None
    window_s: float | None = None
    shift_s: float | None = None
    unknown_label: str | None = None
    control: bool = False

    def path(self, split: str) -> str:
        """The file of ``split`` (``train``, ``val`` or ``test``) relative to the BEANS checkout."""
        return f"{self.folder}/{self.file.format(split=SPLIT_NAMES[split])}"


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


def _numbers(first: int, last: int) -> tuple[str, ...]:
    return tuple(str(i) for i in range(first, last + 1))


BEANS_SETS: tuple[BeansSet, ...] = (
    BeansSet('esc50', 'classification', 'data/esc50/meta', 'esc50.{split}.csv', clip_s=5, control=True,
             labels=_numbers(0, 49)),
    BeansSet('speech-commands', 'classification', 'data/speech_commands', '{split}.csv', clip_s=1, control=True,
             labels=_words(
        'backward bed bird cat dog down eight five follow forward four go happy house learn left marvin '
        'nine no off on one right seven sheila six stop three tree two up visual wow yes zero')),
    BeansSet('watkins', 'classification', 'data/watkins', 'annotations.{split}.csv', clip_s=3,
             labels=_words(
        'Clymene_Dolphin Bottlenose_Dolphin Spinner_Dolphin Beluga,_White_Whale Bearded_Seal Minke_Whale '
        'Humpback_Whale Southern_Right_Whale White-sided_Dolphin Narwhal White-beaked_Dolphin '
        'Northern_Right_Whale Frasers_Dolphin Grampus,_Rissos_Dolphin Harp_Seal Atlantic_Spotted_Dolphin '
        'Fin,_Finback_Whale Ross_Seal Rough-Toothed_Dolphin Killer_Whale Pantropical_Spotted_Dolphin '
        'Short-Finned_Pacific_Pilot_Whale Bowhead_Whale False_Killer_Whale Melon_Headed_Whale '
        'Long-Finned_Pilot_Whale Striped_Dolphin Leopard_Seal Walrus Sperm_Whale Common_Dolphin')),
    BeansSet('bats', 'classification', 'data/egyptian_fruit_bats', 'annotations.{split}.csv', clip_s=5,
             labels=_words('111 210 211 215 216 220 226 228 230 231')),
    BeansSet('cbi', 'classification', 'data/cbi', 'annotations.{split}.csv', clip_s=10,
             labels=_words(
        'aldfly ameavo amebit amecro amegfi amekes amepip amered amerob amewig amewoo amtspa annhum '
        'astfly baisan baleag balori banswa barswa bawwar belkin1 belspa2 bewwre bkbcuc bkbmag1 bkbwar '
        'bkcchi bkchum bkhgro bkpwar bktspa blkpho blugrb1 blujay bnhcow boboli bongul brdowl brebla '
        'brespa brncre brnthr brthum brwhaw btbwar btnwar btywar buffle buggna buhvir bulori bushti '
        'buwtea buwwar cacwre calgul calqua camwar cangoo canwar canwre carwre casfin caster1 casvir '
        'cedwax chispa chiswi chswar chukar clanut cliswa comgol comgra comloo commer comnig comrav '
        'comred comter comyel coohaw coshum cowscj1 daejun doccor dowwoo dusfly eargre easblu easkin '
        'easmea easpho eastow eawpew eucdov eursta evegro fiespa fiscro foxspa gadwal gcrfin gnttow '
        'gnwtea gockin gocspa goleag grbher3 grcfly greegr greroa greyel grhowl grnher grtgra grycat '
        'gryfly haiwoo hamfly hergul herthr hoomer hoowar horgre horlar houfin houspa houwre indbun '
        'juntit1 killde labwoo larspa lazbun leabit leafly leasan lecthr lesgol lesnig lesyel lewwoo '
        'linspa lobcur lobdow logshr lotduc louwat macwar magwar mallar3 marwre merlin moublu mouchi '
        'moudov norcar norfli norhar2 normoc norpar norpin norsho norwat nrwswa nutwoo olsfly orcwar '
        'osprey ovenbi1 palwar pasfly pecsan perfal phaino pibgre pilwoo pingro pinjay pinsis pinwar '
        'plsvir prawar purfin pygnut rebmer rebnut rebsap rebwoo redcro redhea reevir1 renpha reshaw '
        'rethaw rewbla ribgul rinduc robgro rocpig rocwre rthhum ruckin rudduc rufgro rufhum rusbla '
        'sagspa1 sagthr savspa saypho scatan scoori semplo semsan sheowl shshaw snobun snogoo solsan '
        'sonspa sora sposan spotow stejay swahaw swaspa swathr treswa truswa tuftit tunswa veery vesspa '
        'vigswa warvir wesblu wesgre weskin wesmea wessan westan wewpew whbnut whcspa whfibi whtspa '
        'whtswi wilfly wilsni1 wiltur winwre3 wlswar wooduc wooscj2 woothr y00475 yebfly yebsap yehbla '
        'yelwar yerwar yetvir')),
    BeansSet('dogs', 'classification', 'data/dogs', 'annotations.{split}.csv', clip_s=10,
             labels=_words('Farley Freid Keri Louie Luke Mac Roodie Rudy Siggy Zoe')),
    BeansSet('humbugdb', 'classification', 'data/HumBugDB/data/metadata', '{split}.csv', clip_s=3,
             labels=('non-mosquito', 'an arabiensis', 'others', 'an gambiae ss', 'culex quinquefasciatus',
                     'culex pipiens complex', 'an funestus ss', 'an squamosus', 'ma uniformis', 'an dirus',
                     'ae aegypti', 'an harrisoni', 'an maculatus', 'an funestus sl')),
    BeansSet('dcase', 'detection', 'data/dcase', '{split}.jsonl', window_s=2, shift_s=1,
             labels=_words('AMRE BBWA BTBW CALL CCMK CHSP COYE GCTH GIG GRN OVEN Q RBGR SAVS SNMK SQT SWTH WTSP')),
    BeansSet('enabirds', 'detection', 'data/enabirds', '{split}.jsonl', window_s=2, shift_s=1,
             unknown_label='OTHR',
             labels=_words(
        'AMCR AMGO AMRE AMRO BAWW BCCH BGGN BHCO BHVI BLJA BTNW BWWA CARW COYE EATO HETH HOWA KEWA LOWA '
        'NOCA NOFL OVEN RBGR RBWO RCKI REVI SCTA SWTH TUTI WBNU WITU WOTH YBCU OTHR')),
    BeansSet('hiceas', 'detection', 'data/hiceas', '{split}.jsonl', window_s=10, shift_s=5,
             labels=_numbers(1, 1)),
    BeansSet('rfcx', 'detection', 'data/rfcx', '{split}.jsonl', window_s=10, shift_s=5,
             labels=_numbers(0, 23)),
    BeansSet('hainan-gibbons', 'detection', 'data/hainan_gibbons', '{split}.jsonl', window_s=4, shift_s=2,
             unknown_label='1',
             labels=_numbers(1, 3)),
)


def beans_set(name: str) -> BeansSet:
    """The BEANS set called ``name``; a KeyError listing the sets otherwise."""
    for spec in BEANS_SETS:
        if spec.name == name:
            return spec
    raise KeyError(f"BEANS has no data set {name!r}; it has: {', '.join(s.name for s in BEANS_SETS)}")
