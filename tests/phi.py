"""Fake protected health information for DICOM tests: a value in every attribute of the DICOM basic
de-identification profile, and a search of outputs for any of them.

``BASIC_PROFILE`` is the attributes of DICOM PS3.15 (2023) Annex E, Table E.1-1, that the Basic
Application Level Confidentiality Profile removes or replaces, by pydicom keyword: 601 of them. Left out,
as a file cannot carry them as ordinary elements: the command-group UIDs (0000,1000/1001), the file meta's
Media Storage SOP Instance UID (radpipe writes its own), Digital Signatures Sequence, Data Set Trailing
Padding, and the repeating overlay (60xx) and curve (50xx) groups.

Values are made to be found: every text value carries ``MARKER``, every UID starts with ``UID_ROOT``; dates,
times and numbers (8 characters or more) are searched one by one. In text (UTF-8 files, the SQL dump of a
sqlite database, captured logs) they count only as whole tokens, since a digit next to them makes another
number; in binary files (DICOM, model weights) they count anywhere, since 8 given bytes do not turn up there
by chance, while a neighbouring byte can be anything. Ages (``087Y``, 4 characters) are searched in text
only. Two values are set but not searchable: the binary numbers (US) of two GPS attributes.
"""

from __future__ import annotations

import datetime
import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MARKER = "ZQPHI"
UID_ROOT = "1.2.826.0.1.3680043.10.999."
PRIVATE_CREATOR = "ZQPHI PRIVATE CREATOR"

# fmt: off
BASIC_PROFILE: tuple[str, ...] = (
    "AccessionNumber", "AcquisitionComments", "AcquisitionContextSequence", "AcquisitionDate",
    "AcquisitionDateTime", "AcquisitionDeviceProcessingDescription", "AcquisitionFieldOfViewLabel",
    "AcquisitionProtocolDescription", "AcquisitionTime", "AcquisitionUID", "ActualHumanPerformersSequence",
    "AdditionalPatientHistory", "AddressTrial", "AdmissionID", "AdmittingDate", "AdmittingDiagnosesCodeSequence",
    "AdmittingDiagnosesDescription", "AdmittingTime", "Allergies", "AnnotationGroupDescription",
    "AnnotationGroupLabel", "AnnotationGroupUID", "ApprovalStatusDateTime", "Arbitrary", "AssertionDateTime",
    "AssertionExpirationDateTime", "AttributeModificationDateTime", "AuthorObserverSequence", "BarcodeValue",
    "BeamDescription", "BeamHoldTransitionDateTime", "BolusDescription", "BranchOfService", "CalibrationDate",
    "CalibrationDateTime", "CalibrationTime", "CameraOwnerName", "CassetteID", "CertificateOfSigner",
    "CertifiedTimestamp", "ClinicalTrialCoordinatingCenterName",
    "ClinicalTrialProtocolEthicsCommitteeApprovalNumber", "ClinicalTrialProtocolEthicsCommitteeName",
    "ClinicalTrialProtocolID", "ClinicalTrialProtocolName", "ClinicalTrialSeriesDescription",
    "ClinicalTrialSeriesID", "ClinicalTrialSiteID", "ClinicalTrialSiteName", "ClinicalTrialSponsorName",
    "ClinicalTrialSubjectID", "ClinicalTrialSubjectReadingID", "ClinicalTrialTimePointDescription",
    "ClinicalTrialTimePointID", "CommentsOnRadiationDose", "CommentsOnThePerformedProcedureStep",
    "CompensatorDescription", "ConcatenationUID", "ConceptualVolumeCombinationDescription",
    "ConceptualVolumeDescription", "ConceptualVolumeUID", "ConfidentialityConstraintOnPatientDataDescription",
    "ConstituentConceptualVolumeUID", "ConsultingPhysicianIdentificationSequence", "ConsultingPhysicianName",
    "ContainerComponentID", "ContainerDescription", "ContainerIdentifier",
    "ContentCreatorIdentificationCodeSequence", "ContentCreatorName", "ContentDate", "ContentSequence",
    "ContentTime", "ContextGroupLocalVersion", "ContextGroupVersion", "ContrastBolusAgent",
    "ContrastBolusStartTime", "ContrastBolusStopTime", "ContributionDateTime", "ContributionDescription",
    "CountryOfResidence", "CreationDate", "CreationTime", "CurrentObserverTrial", "CurrentPatientLocation",
    "CurveDate", "CurveTime", "CustodialOrganizationSequence", "Date", "DateOfDocumentOrVerbalTransactionTrial",
    "DateOfInstallation", "DateOfLastCalibration", "DateOfLastDetectorCalibration", "DateOfManufacture",
    "DateOfSecondaryCapture", "DateTime", "DateTimeOfLastCalibration", "DecayCorrectionDateTime",
    "DecompositionDescription", "DerivationDescription", "DestinationAE", "DetectorID", "DeviceAlternateIdentifier",
    "DeviceDescription", "DeviceLabel", "DeviceSerialNumber", "DeviceSettingDescription", "DeviceUID",
    "DigitalSignatureDateTime", "DigitalSignatureUID", "DimensionOrganizationUID", "DischargeDate",
    "DischargeDiagnosisDescription", "DischargeTime", "DisplacementReferenceLabel", "DistributionAddress",
    "DistributionName", "DoseReferenceDescription", "DoseReferenceUID", "DosimetricObjectiveUID",
    "EffectiveDateTime", "EncapsulatedDocument", "EndAcquisitionDateTime", "EntityDescription", "EntityLabel",
    "EntityLongLabel", "EntityName", "EquipmentFrameOfReferenceDescription",
    "EthicsCommitteeApprovalEffectivenessEndDate", "EthicsCommitteeApprovalEffectivenessStartDate", "EthnicGroup",
    "ExclusionStartDateTime", "ExpectedCompletionDateTime", "FailedSOPInstanceUIDList", "FiducialUID",
    "FillerOrderNumberImagingServiceRequest", "FilterLookupTableDescription", "FindingsGroupRecordingDateTrial",
    "FindingsGroupRecordingTimeTrial", "FirstTreatmentDate", "FixationDeviceDescription", "FlowIdentifier",
    "FlowIdentifierSequence", "FractionGroupDescription", "FractionationNotes", "FrameAcquisitionDateTime",
    "FrameComments", "FrameOfReferenceUID", "FrameOriginTimestamp", "FrameReferenceDateTime", "FunctionalSyncPulse",
    "GPSAltitude", "GPSAltitudeRef", "GPSAreaInformation", "GPSDOP", "GPSDateStamp", "GPSDestBearing",
    "GPSDestBearingRef", "GPSDestDistance", "GPSDestDistanceRef", "GPSDestLatitude", "GPSDestLatitudeRef",
    "GPSDestLongitude", "GPSDestLongitudeRef", "GPSDifferential", "GPSImgDirection", "GPSImgDirectionRef",
    "GPSLatitude", "GPSLatitudeRef", "GPSLongitude", "GPSLongitudeRef", "GPSMapDatum", "GPSMeasureMode",
    "GPSProcessingMethod", "GPSSatellites", "GPSSpeed", "GPSSpeedRef", "GPSStatus", "GPSTimeStamp", "GPSTrack",
    "GPSTrackRef", "GPSVersionID", "GantryID", "GeneratorID", "GraphicAnnotationSequence",
    "HL7DocumentEffectiveTime", "HangingProtocolCreationDateTime", "HumanPerformerName",
    "HumanPerformerOrganization", "IconImageSequence", "IdentifyingComments", "ImageComments",
    "ImagePresentationComments", "ImagingServiceRequestComments", "ImpedanceMeasurementDateTime", "Impressions",
    "InformationIssueDateTime", "InstanceCoercionDateTime", "InstanceCreationDate", "InstanceCreationTime",
    "InstanceCreatorUID", "InstanceOriginStatus", "InstitutionAddress", "InstitutionCodeSequence",
    "InstitutionName", "InstitutionalDepartmentName", "InstitutionalDepartmentTypeCodeSequence",
    "InstructionPerformedDateTime", "InsurancePlanIdentification", "IntendedFractionStartTime",
    "IntendedPhaseEndDate", "IntendedPhaseStartDate", "IntendedRecipientsOfResultsIdentificationSequence",
    "InterlockDateTime", "InterlockDescription", "InterlockOriginDescription", "InterpretationApprovalDate",
    "InterpretationApprovalTime", "InterpretationApproverSequence", "InterpretationAuthor",
    "InterpretationDiagnosisDescription", "InterpretationID", "InterpretationIDIssuer",
    "InterpretationRecordedDate", "InterpretationRecordedTime", "InterpretationRecorder", "InterpretationText",
    "InterpretationTranscriber", "InterpretationTranscriptionDate", "InterpretationTranscriptionTime",
    "InterventionDrugStartTime", "InterventionDrugStopTime", "IrradiationEventUID",
    "IssueDateOfImagingServiceRequest", "IssueTimeOfImagingServiceRequest", "IssuerOfAdmissionID",
    "IssuerOfAdmissionIDSequence", "IssuerOfPatientID", "IssuerOfServiceEpisodeID",
    "IssuerOfServiceEpisodeIDSequence", "IssuerOfTheContainerIdentifierSequence",
    "IssuerOfTheSpecimenIdentifierSequence", "LabelText", "LargePaletteColorLookupTableUID", "LastMenstrualDate",
    "LensMake", "LensModel", "LensSerialNumber", "LensSpecification", "LongDeviceDescription", "MAC", "MakerNote",
    "ManufacturerDeviceClassUID", "ManufacturerDeviceIdentifier", "MedicalAlerts", "MedicalRecordLocator",
    "MilitaryRank", "ModifiedAttributesSequence", "ModifiedImageDate", "ModifiedImageDescription",
    "ModifiedImageTime", "ModifyingDeviceID", "ModifyingSystem", "MostRecentTreatmentDate",
    "MultienergyAcquisitionDescription", "MultiplexGroupUID", "NameOfPhysiciansReadingStudy",
    "NamesOfIntendedRecipientsOfResults", "NetworkID", "NonconformingDataElementValue",
    "NonconformingModifiedAttributesSequence", "ObservationDateTime", "ObservationDateTrial",
    "ObservationStartDateTime", "ObservationSubjectUIDTrial", "ObservationTimeTrial", "ObservationUID",
    "Occupation", "OperatorIdentificationSequence", "OperatorsName", "OrderCallbackPhoneNumber",
    "OrderCallbackTelecomInformation", "OrderEnteredBy", "OrderEntererLocation", "OriginalAttributesSequence",
    "Originator", "OtherPatientIDs", "OtherPatientIDsSequence", "OtherPatientNames", "OverlayDate", "OverlayTime",
    "OverrideDateTime", "PaletteColorLookupTableUID", "ParticipantSequence", "ParticipationDateTime",
    "PatientAddress", "PatientAge", "PatientBirthDate", "PatientBirthName", "PatientBirthTime", "PatientComments",
    "PatientID", "PatientInstitutionResidence", "PatientInsurancePlanCodeSequence", "PatientMotherBirthName",
    "PatientName", "PatientPrimaryLanguageCodeSequence", "PatientPrimaryLanguageModifierCodeSequence",
    "PatientReligiousPreference", "PatientSetupPhotoDescription", "PatientSetupUID", "PatientSex",
    "PatientSexNeutered", "PatientSize", "PatientState", "PatientTelecomInformation", "PatientTelephoneNumbers",
    "PatientTransportArrangements", "PatientTreatmentPreparationMethodDescription",
    "PatientTreatmentPreparationProcedureParameterDescription", "PatientWeight", "PerformedLocation",
    "PerformedProcedureStepDescription", "PerformedProcedureStepEndDate", "PerformedProcedureStepEndDateTime",
    "PerformedProcedureStepEndTime", "PerformedProcedureStepID", "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartDateTime", "PerformedProcedureStepStartTime", "PerformedStationAETitle",
    "PerformedStationGeographicLocationCodeSequence", "PerformedStationName", "PerformedStationNameCodeSequence",
    "PerformingPhysicianIdentificationSequence", "PerformingPhysicianName", "PersonAddress",
    "PersonIdentificationCodeSequence", "PersonName", "PersonTelecomInformation", "PersonTelephoneNumbers",
    "PhysicianApprovingInterpretation", "PhysiciansOfRecord", "PhysiciansOfRecordIdentificationSequence",
    "PhysiciansReadingStudyIdentificationSequence", "PlacerOrderNumberImagingServiceRequest", "PlateID",
    "PositionAcquisitionTemplateDescription", "PositionAcquisitionTemplateName", "PreMedication", "PregnancyStatus",
    "PrescriptionDescription", "PrescriptionNotes", "PrescriptionNotesSequence", "PresentationCreationDate",
    "PresentationCreationTime", "PresentationDisplayCollectionUID", "PresentationSequenceCollectionUID",
    "PriorTreatmentDoseDescription", "ProcedureStepCancellationDateTime", "ProductExpirationDateTime",
    "ProtocolName", "PyramidDescription", "PyramidLabel", "PyramidUID", "ROIDescription",
    "ROIGenerationDescription", "ROIInterpreter", "ROIName", "ROIObservationDescription", "ROIObservationLabel",
    "RTAccessoryDeviceSlotID", "RTAccessoryHolderSlotID", "RTPhysicianIntentNarrative", "RTPlanDate",
    "RTPlanDescription", "RTPlanLabel", "RTPlanName", "RTPlanTime", "RTPrescriptionLabel", "RTToleranceSetLabel",
    "RTTreatmentApproachLabel", "RTTreatmentPhaseUID", "RadiationDoseIdentificationLabel",
    "RadiationDoseInVivoMeasurementLabel", "RadiationGenerationModeDescription", "RadiationGenerationModeLabel",
    "RadiopharmaceuticalStartDateTime", "RadiopharmaceuticalStartTime", "RadiopharmaceuticalStopDateTime",
    "RadiopharmaceuticalStopTime", "ReasonForOmissionDescription", "ReasonForRequestedProcedureCodeSequence",
    "ReasonForStudy", "ReasonForSuperseding", "ReasonForTheAttributeModification",
    "ReasonForTheImagingServiceRequest", "ReasonForTheRequestedProcedure", "ReasonForVisit",
    "ReasonForVisitCodeSequence", "ReceivingAE", "RecordedRTControlPointDateTime", "ReferencedConceptualVolumeUID",
    "ReferencedDateTime", "ReferencedDigitalSignatureSequence", "ReferencedDoseReferenceUID",
    "ReferencedDosimetricObjectiveUID", "ReferencedFiducialsUID", "ReferencedFrameOfReferenceUID",
    "ReferencedGeneralPurposeScheduledProcedureStepTransactionUID", "ReferencedImageSequence",
    "ReferencedObservationUIDTrial", "ReferencedPatientAliasSequence", "ReferencedPatientPhotoSequence",
    "ReferencedPatientSequence", "ReferencedPerformedProcedureStepSequence", "ReferencedSOPInstanceMACSequence",
    "ReferencedSOPInstanceUID", "ReferencedSOPInstanceUIDInFile", "ReferencedStudySequence",
    "ReferencedTreatmentPositionGroupUID", "ReferringPhysicianAddress", "ReferringPhysicianIdentificationSequence",
    "ReferringPhysicianName", "ReferringPhysicianTelephoneNumbers", "RegionOfResidence",
    "RelatedFrameOfReferenceUID", "RequestAttributesSequence", "RequestedContrastAgent",
    "RequestedProcedureComments", "RequestedProcedureDescription", "RequestedProcedureID",
    "RequestedProcedureLocation", "RequestedSeriesDescription", "RequestingAE", "RequestingPhysician",
    "RequestingService", "RespiratoryMotionCompensationTechniqueDescription", "ResponsibleOrganization",
    "ResponsiblePerson", "ResultsComments", "ResultsDistributionListSequence", "ResultsID", "ResultsIDIssuer",
    "RetrieveAETitle", "ReviewDate", "ReviewTime", "ReviewerName", "SOPAuthorizationDateTime", "SOPInstanceUID",
    "SafePositionExitDate", "SafePositionExitTime", "SafePositionReturnDate", "SafePositionReturnTime",
    "ScheduledAdmissionDate", "ScheduledAdmissionTime", "ScheduledDischargeDate", "ScheduledDischargeTime",
    "ScheduledHumanPerformersSequence", "ScheduledPatientInstitutionResidence",
    "ScheduledPerformingPhysicianIdentificationSequence", "ScheduledPerformingPhysicianName",
    "ScheduledProcedureStepDescription", "ScheduledProcedureStepEndDate", "ScheduledProcedureStepEndTime",
    "ScheduledProcedureStepExpirationDateTime", "ScheduledProcedureStepID", "ScheduledProcedureStepLocation",
    "ScheduledProcedureStepModificationDateTime", "ScheduledProcedureStepStartDate",
    "ScheduledProcedureStepStartDateTime", "ScheduledProcedureStepStartTime", "ScheduledStationAETitle",
    "ScheduledStationGeographicLocationCodeSequence", "ScheduledStationName", "ScheduledStationNameCodeSequence",
    "ScheduledStudyLocation", "ScheduledStudyLocationAETitle", "ScheduledStudyStartDate", "ScheduledStudyStartTime",
    "ScheduledStudyStopDate", "ScheduledStudyStopTime", "SelectorAEValue", "SelectorASValue", "SelectorDAValue",
    "SelectorDTValue", "SelectorLOValue", "SelectorLTValue", "SelectorOBValue", "SelectorPNValue",
    "SelectorSHValue", "SelectorSTValue", "SelectorTMValue", "SelectorUNValue", "SelectorURValue",
    "SelectorUTValue", "SeriesDate", "SeriesDescription", "SeriesInstanceUID", "SeriesTime",
    "ServiceEpisodeDescription", "ServiceEpisodeID", "SetupTechniqueDescription", "ShieldingDeviceDescription",
    "SlideIdentifier", "SmokingStatus", "SourceConceptualVolumeUID", "SourceEndDateTime",
    "SourceFrameOfReferenceUID", "SourceIdentifier", "SourceImageSequence", "SourceManufacturer",
    "SourceOfPreviousValues", "SourceSerialNumber", "SourceStartDateTime", "SourceStrengthReferenceDate",
    "SourceStrengthReferenceTime", "SpecialNeeds", "SpecimenAccessionNumber", "SpecimenDetailedDescription",
    "SpecimenIdentifier", "SpecimenPreparationSequence", "SpecimenShortDescription", "SpecimenUID",
    "StartAcquisitionDateTime", "StationAETitle", "StationName", "StorageMediaFileSetUID", "StructureSetDate",
    "StructureSetDescription", "StructureSetLabel", "StructureSetName", "StructureSetTime", "StudyArrivalDate",
    "StudyArrivalTime", "StudyComments", "StudyCompletionDate", "StudyCompletionTime", "StudyDate",
    "StudyDescription", "StudyID", "StudyIDIssuer", "StudyInstanceUID", "StudyReadDate", "StudyReadTime",
    "StudyTime", "StudyVerifiedDate", "StudyVerifiedTime", "SubstanceAdministrationDateTime",
    "SynchronizationFrameOfReferenceUID", "TargetUID", "TelephoneNumberTrial", "TemplateExtensionCreatorUID",
    "TemplateExtensionOrganizationUID", "TemplateLocalVersion", "TemplateVersion", "TextComments", "TextString",
    "Time", "TimeOfDocumentCreationOrVerbalTransactionTrial", "TimeOfLastCalibration",
    "TimeOfLastDetectorCalibration", "TimeOfSecondaryCapture", "TimezoneOffsetFromUTC", "TopicAuthor",
    "TopicKeywords", "TopicSubject", "TopicTitle", "TrackingUID", "TransactionUID",
    "TransducerIdentificationSequence", "TreatmentControlPointDate", "TreatmentControlPointTime", "TreatmentDate",
    "TreatmentMachineName", "TreatmentPositionGroupLabel", "TreatmentPositionGroupUID", "TreatmentSessionUID",
    "TreatmentSite", "TreatmentSites", "TreatmentTechniqueNotes", "TreatmentTime",
    "TreatmentToleranceViolationDateTime", "TreatmentToleranceViolationDescription", "UDISequence", "UID",
    "UniqueDeviceIdentifier", "UserContentLabel", "UserContentLongLabel", "VerbalSourceIdentifierCodeSequenceTrial",
    "VerbalSourceTrial", "VerificationDateTime", "VerifyingObserverIdentificationCodeSequence",
    "VerifyingObserverName", "VerifyingObserverSequence", "VerifyingOrganization", "VisitComments",
    "WaveformFilterDescription", "XRayDetectorID", "XRayDetectorLabel", "XRaySourceID",
)
# fmt: on


@dataclass
class FakePhi:
    """The header of one fake patient's files and every value in it that a search can find."""

    header: dict[str, Any] = field(default_factory=dict)
    tokens: list[str] = field(default_factory=list)
    """Dates, times and numbers, 8 characters or more."""
    short: list[str] = field(default_factory=list)
    """Ages (4 characters): searched in text only."""


def fake_phi(patient: int) -> FakePhi:
    """A value for every attribute of ``BASIC_PROFILE``. ``patient`` varies the identity (ID, name, study);
    the other values are the same for every patient, so that a search has a few hundred tokens to look for."""
    from pydicom.datadict import dictionary_VR
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    fake = FakePhi()
    epoch = datetime.date(1901, 3, 7)
    for i, keyword in enumerate(BASIC_PROFILE):
        vr = dictionary_VR(keyword).split(" or ")[0]
        text = f"{MARKER}{i:03d}{vr}"
        day = epoch + datetime.timedelta(days=37 * i)
        if vr in ("LO", "LT", "SH", "ST", "UT", "UC", "CS", "AE"):
            value: Any = text
        elif vr == "PN":
            value = f"{text}^Doe"
        elif vr == "UR":
            value = f"https://{text.lower()}.example/"
        elif vr == "UI":
            value = f"{UID_ROOT}{i}"
        elif vr == "DA":
            value = day.strftime("%Y%m%d")
            fake.tokens.append(value)
        elif vr == "DT":
            value = day.strftime("%Y%m%d") + f"{i % 24:02d}1113.{i:03d}"
            fake.tokens.append(value)
        elif vr == "TM":
            value = f"{i % 24:02d}{i % 60:02d}17.{i:03d}"
            fake.tokens.append(value)
        elif vr == "DS":
            value = f"7{i:03d}.3141"
            fake.tokens.append(value)
        elif vr == "IS":
            value = f"9{i:04d}7171"
            fake.tokens.append(value)
        elif vr == "AS":
            value = f"{i % 90 + 10:03d}Y"
            fake.short.append(value)
        elif vr in ("OB", "UN"):
            value = f"{text}-bytes".encode()
        elif vr == "SQ":
            item = Dataset()
            item.CodeMeaning = text
            item.PersonName = f"{text}^Nested"
            value = Sequence([item])
        elif vr == "US":
            value = 4242
        else:
            raise AssertionError(f"no fake value for {keyword} ({vr})")
        fake.header[keyword] = value
    fake.header["PatientID"] = f"{MARKER}PID{patient:03d}"
    fake.header["PatientName"] = f"{MARKER}^Patient{patient:03d}"
    fake.header["StudyInstanceUID"] = f"{UID_ROOT}1000.{patient}"
    return fake


def add_private_phi(ds: Any) -> None:
    """A private block, as scanners write them, with a name in it."""
    block = ds.private_block(0x0099, PRIVATE_CREATOR, create=True)
    block.add_new(0x01, "LO", f"{MARKER}-private-referrer")


def _text(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _token(value: str) -> re.Pattern[bytes]:
    return re.compile(rb"(?<![0-9A-Za-z])" + re.escape(value.encode()) + rb"(?![0-9A-Za-z])")


def find_phi(roots: Iterable[Path], phi: Iterable[FakePhi], texts: Iterable[tuple[str, str]] = ()) -> list[str]:
    """Every place under ``roots`` (files, and SQL dumps of sqlite databases) and in ``texts`` ((name, text)
    pairs: captured logs, answers) where a fake value turns up."""
    phis = list(phi)
    tokens = sorted({t for p in phis for t in p.tokens})
    short = sorted({t for p in phis for t in p.short})
    always = [(MARKER, MARKER.encode()), (UID_ROOT, UID_ROOT.encode())]
    patterns = {t: _token(t) for t in (*tokens, *short)}
    sources: list[tuple[str, bytes]] = [(name, text.encode()) for name, text in texts]
    for root in roots:
        for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
            data = path.read_bytes()
            sources.append((str(path), data))
            if data[:16] == b"SQLite format 3\x00":
                with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
                    sources.append((f"{path} (SQL dump)", "\n".join(db.iterdump()).encode()))
    found = []
    for name, data in sources:
        for label, needle in always:
            if needle in data:
                found.append(f"{name}: {label}...")
        if _text(data) or name.endswith("(SQL dump)"):
            found += [f"{name}: {v}" for v in (*tokens, *short) if v.encode() in data and patterns[v].search(data)]
        else:
            found += [f"{name}: {v}" for v in tokens if v.encode() in data]
    return found
